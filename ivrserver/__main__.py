from ivrserver.cli import main

raise SystemExit(main())
