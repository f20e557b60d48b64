"""Adapters for the files administrators edit: menus, the routing policy, the agents list.

Each reads its file through `yaml_source` (one line-numbered YAML loader, one error format:
`file:line:column: severity: message (hint)`) and hands the plain data to `domain/`.
"""
