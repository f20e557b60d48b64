"""`ivrserver customers import | export | show`.

Import reads CSV or YAML (by extension, or --format), validates every row with the shared rules
(`ivrserver.domain.customer_validation`), reports each bad row with its line number and imports
nothing unless every row is valid — or, with --partial, only the valid rows. Rows are upserts by
id. A row without pin/pin_hash keeps the PIN the customer already has.

CSV columns: id, name, phones (separated by ';'), tier, segment, language, account_manager,
account_number, pin, pin_hash, timezone, allowed_from, allowed_until, do_not_call, attr.NAME...
YAML: a list of customer mappings (or `customers:` holding that list); every scalar is read as
text, so PINs and numbers with leading zeros survive. Clear PINs are hashed keyed with the
server's pepper (`security.pepper_file`, see services/pepper.py).

Export never writes `pin` or `pin_hash`: re-importing an export into the same Redis keeps every
customer's PIN (a row without them keeps the stored one while the account number is unchanged);
elsewhere customers need new PINs. CSV cells that begin with `=`, `+`, `-`, `@`, tab, CR or `'`
get a leading `'` (OWASP CSV injection), and import drops one `'` that stands before one of those
characters, so an export imports back exactly (`'+8613800000000` → `+8613800000000`).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import io
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import yaml
from redis.exceptions import RedisError

from ivrserver.commands import load_settings
from ivrserver.domain import customer_validation as cv
from ivrserver.domain import phone
from ivrserver.domain.customer_validation import FieldError, ValidCustomer
from ivrserver.domain.model import Customer
from ivrserver.domain.spreadsheet import csv_escape, csv_unescape
from ivrserver.services import customers as customer_service
from ivrserver.services import pepper as pepper_source
from ivrserver.services.customers import AccountInUse, CustomerService

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_ROWS = 200_000


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("customers", help="import, export and show customers")
    sub = parser.add_subparsers(dest="customers_command", metavar="COMMAND", required=True)

    imp = sub.add_parser("import", help="import customers from a CSV or YAML file")
    imp.add_argument("file", help="a .csv, .yaml or .yml file")
    imp.add_argument("--format", choices=("csv", "yaml"), help="file format (default: from the extension)")
    imp.add_argument("--partial", action="store_true",
                     help="import the valid rows even if some rows are bad (default: all or nothing)")
    imp.add_argument("--region", "--default-country", dest="default_country", default=None, metavar="CC",
                     help="ISO 3166 region national numbers in the file are read in, e.g. CN ('' for none; "
                          "default: phone.default_region from the configuration)")
    _common(imp)
    imp.set_defaults(func=run_import)

    exp = sub.add_parser("export", help="write every customer as CSV or YAML (never PINs or their hashes; "
                                        "CSV cells that a spreadsheet would run as formulas begin with ')")
    exp.add_argument("--format", choices=("csv", "yaml"), default="csv")
    exp.add_argument("--output", "-o", help="file to write (default: standard output)")
    _common(exp)
    exp.set_defaults(func=run_export)

    show = sub.add_parser("show", help="show one customer with open cases and recent contacts")
    show.add_argument("id")
    _common(show)
    show.set_defaults(func=run_show)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="Redis URL (default: redis.url from the configuration)")


def _run(args: argparse.Namespace, body: Any) -> int:
    settings = load_settings(getattr(args, "config", None))
    if settings is None:
        return 2
    url = args.redis_url or settings.redis.url
    if not url.startswith(("redis://", "rediss://", "unix://")):
        print(f"--redis-url: expected a redis://, rediss:// or unix:// URL, got {url!r}", file=sys.stderr)
        return 2

    async def main() -> int:
        async with customer_service.for_command(settings.redis, args.redis_url,
                                                records=bool(settings.postgres.dsn)) as service:
            return int(await body(service))
    try:
        return asyncio.run(main())
    except (RedisError, OSError) as exc:
        print(f"Redis at {url}: {exc}", file=sys.stderr)
        return 3


# --- import --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Row:
    line: int
    data: Any


@dataclasses.dataclass
class RowError:
    line: int
    error: FieldError | str

    def __str__(self) -> str:
        return f"line {self.line}: {self.error}"


class _TextLoader(yaml.SafeLoader):
    """SafeLoader that reads every plain scalar as text (only `null`/`~`/empty stays None) and
    refuses aliases (no billion-laughs expansion)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", event.start_mark)
        return super().compose_node(parent, index)


_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag == "tag:yaml.org,2002:null"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_yaml(text: str) -> tuple[list[Row], list[Row], list[RowError]]:
    """(customer rows, case rows, errors) of a YAML document: a list of customers, or a mapping
    with `customers:` (a list) and optionally `cases:` (a list of cases to open)."""
    loader = _TextLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return [], [], [RowError(line, f"not valid YAML: {problem}")]
    finally:
        loader.dispose()
    if data is None or node is None:
        return [], [], []
    if isinstance(data, list):
        sections: dict[str, tuple[Any, Any]] = {"customers": (node, data)}
    elif isinstance(data, dict) and data and set(data) <= {"customers", "cases"}:
        sections = {key.value: (value, data[key.value]) for key, value in node.value}
    else:
        return [], [], [RowError(1, "expected a list of customers, or a mapping with `customers:` "
                                    "and optionally `cases:` lists")]
    out: dict[str, list[Row]] = {"customers": [], "cases": []}
    for name, (section_node, value) in sections.items():
        if value is None:
            continue
        if not isinstance(value, list):
            return [], [], [RowError(section_node.start_mark.line + 1, f"{name}: expected a list")]
        out[name] = [Row(item.start_mark.line + 1, v) for item, v in zip(section_node.value, value, strict=True)]
    return out["customers"], out["cases"], []


def parse_csv(text: str) -> tuple[list[Row], list[RowError]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        return [], [RowError(1, f"not valid CSV: {exc}")]
    if not header:
        return [], [RowError(1, "empty file: expected a header row")]
    header_errors = cv.check_flat_columns([h.strip() for h in header])
    if header_errors:
        return [], [RowError(1, f"header: {e}") for e in header_errors]
    reader.fieldnames = [h.strip() for h in header]
    rows: list[Row] = []
    errors: list[RowError] = []
    last = reader.line_num
    try:
        for record in reader:
            start, last = last + 1, reader.line_num
            if None in record:
                errors.append(RowError(start, "more cells than columns in the header"))
                continue
            rows.append(Row(start, cv.from_flat_row({k: csv_unescape(v) for k, v in record.items()})))
    except csv.Error as exc:
        errors.append(RowError(reader.line_num, f"not valid CSV: {exc}"))
    return rows, errors


def read_rows(path: Path, fmt: str | None) -> tuple[list[Row], list[Row], list[RowError]]:
    """(customer rows, case rows, errors) of a file; cases only come from YAML."""
    fmt = fmt or {".csv": "csv", ".yaml": "yaml", ".yml": "yaml"}.get(path.suffix.lower())
    if fmt is None:
        return [], [], [RowError(0, "cannot tell the format from the file name: use --format csv|yaml")]
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return [], [], [RowError(0, f"file larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")]
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return [], [], [RowError(0, "not UTF-8 text")]
    except OSError as exc:
        return [], [], [RowError(0, f"cannot read: {exc.strerror}")]
    if fmt == "csv":
        rows, errors = parse_csv(text)
        cases: list[Row] = []
    else:
        rows, cases, errors = parse_yaml(text)
    if len(rows) + len(cases) > MAX_ROWS:
        return [], [], [RowError(0, f"more than {MAX_ROWS} rows: split the file")]
    return rows, cases, errors


def validate_rows(rows: Iterable[Row], default_country: str) -> tuple[list[tuple[int, ValidCustomer]],
                                                                       list[RowError]]:
    """Validate every row and the rules between rows (unique ids and account numbers)."""
    valid: list[tuple[int, ValidCustomer]] = []
    errors: list[RowError] = []
    ids: dict[str, int] = {}
    accounts: dict[str, int] = {}
    for row in rows:
        result, problems = cv.validate_customer(row.data, default_country=default_country)
        if result is None:
            errors.extend(RowError(row.line, p) for p in problems)
            continue
        customer = result.customer
        if customer.id in ids:
            errors.append(RowError(row.line, FieldError("id", f"duplicate of line {ids[customer.id]}")))
            continue
        ids[customer.id] = row.line
        if customer.account_number:
            if customer.account_number in accounts:
                errors.append(RowError(row.line, FieldError(
                    "account_number", f"same account number as line {accounts[customer.account_number]}")))
                continue
            accounts[customer.account_number] = row.line
        valid.append((row.line, result))
    return valid, errors


async def _check_store(service: CustomerService, valid: list[tuple[int, ValidCustomer]]
                       ) -> tuple[dict[str, Customer], list[RowError]]:
    """Existing profiles of the rows' ids, and rows whose account number another customer owns."""
    check = await service.check_import(valid)
    errors = [RowError(line, FieldError("account_number", f"already belongs to customer {owner}"))
              for line, owner in check.conflicts]
    return check.existing, errors


def _report(errors: list[RowError], source: str, out: TextIO) -> None:
    for error in sorted(errors, key=lambda e: e.line):
        prefix = f"{source}:{error.line}" if error.line else source
        print(f"{prefix}: {error.error}", file=out)


def validate_cases(rows: Iterable[Row]) -> tuple[list[tuple[int, dict[str, Any]]], list[RowError]]:
    valid: list[tuple[int, dict[str, Any]]] = []
    errors: list[RowError] = []
    for row in rows:
        fields, problems = cv.validate_case_create(row.data)
        if fields is None:
            errors.extend(RowError(row.line, FieldError(f"cases: {p.field}", p.message)) for p in problems)
        else:
            valid.append((row.line, fields))
    return valid, errors


def run_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if args.default_country is None:
        settings = load_settings(getattr(args, "config", None))
        if settings is None:
            return 2
        args.default_country = settings.phone.default_region
    try:
        args.default_country = phone.check_region(args.default_country)
    except ValueError as exc:
        print(f"--region: {exc}", file=sys.stderr)
        return 2
    rows, case_rows, errors = read_rows(path, args.format)
    if errors and not rows and not case_rows:
        _report(errors, str(path), sys.stderr)
        print("nothing imported", file=sys.stderr)
        return 1
    valid, row_errors = validate_rows(rows, args.default_country)
    cases, case_errors = validate_cases(case_rows)
    errors += row_errors + case_errors

    async def body(service: CustomerService) -> int:
        existing, store_errors = await _check_store(service, valid)
        errors.extend(store_errors)
        bad_lines = {e.line for e in errors}
        todo = [(line, item) for line, item in valid if line not in bad_lines]
        known = {item.customer.id for _, item in todo}
        for line, fields in cases:
            if fields["customer_id"] not in known and not await service.exists(fields["customer_id"]):
                errors.append(RowError(line, FieldError("cases: customer_id", "no such customer in this file "
                                                                              "or in the store")))
        bad_lines = {e.line for e in errors}
        todo_cases = [(line, fields) for line, fields in cases if line not in bad_lines]
        if errors and not args.partial:
            _report(errors, str(path), sys.stderr)
            print(f"{len(bad_lines)} bad row(s); nothing imported (use --partial to import the "
                  f"{len(todo) + len(todo_cases)} valid row(s))", file=sys.stderr)
            return 1
        pepper = None
        if any(item.pin is not None for _, item in todo):
            settings = load_settings(getattr(args, "config", None))
            if settings is None:
                return 2
            try:
                pepper = (await asyncio.to_thread(pepper_source.load, settings.security)).pepper
            except pepper_source.PepperError as exc:
                print(f"cannot hash PINs: {exc}", file=sys.stderr)
                return 2
        prepared = await asyncio.to_thread(
            lambda: [(line, customer_service.import_profile(item, existing.get(item.customer.id), pepper))
                     for line, item in todo])
        imported = 0
        for line, customer in prepared:
            try:
                await service.upsert(customer)
                imported += 1
            except AccountInUse as exc:
                errors.append(RowError(line, FieldError("account_number", f"already belongs to customer "
                                                                          f"{exc.owner}")))
        opened = await service.open_cases_once([fields for _, fields in todo_cases], now=time.time(),
                                               actor=customer_service.IMPORT)
        if errors:
            _report(errors, str(path), sys.stderr)
        skipped = len({e.line for e in errors})
        print(f"imported {imported} customer(s)" + (f", opened {opened} case(s)" if opened else "")
              + (f", skipped {skipped} bad row(s)" if skipped else ""))
        return 1 if errors else 0

    return _run(args, body)


# --- export / show -------------------------------------------------------------------------------

# Columns an export never carries: PIN hashes stay in Redis (keyed with the server's pepper, they
# are useless elsewhere anyway, and an offline search needs nothing else).
NOT_EXPORTED = frozenset({"pin", "pin_hash"})


def write_csv(customers: list[Customer], out: TextIO) -> None:
    attr_columns = sorted({cv.ATTRIBUTE_COLUMN_PREFIX + k for c in customers for k in c.attributes})
    columns = [c for c in cv.FLAT_COLUMNS if c not in NOT_EXPORTED] + attr_columns
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for customer in customers:
        row = cv.to_flat_row(customer)
        writer.writerow({k: csv_escape(v) for k, v in row.items() if k not in NOT_EXPORTED})


def write_yaml(customers: list[Customer], out: TextIO) -> None:
    items = []
    for customer in customers:
        item = cv.customer_to_dict(customer)
        items.append({k: v for k, v in item.items() if v is not None and k not in NOT_EXPORTED | {"has_pin"}})
    yaml.safe_dump({"customers": items}, out, sort_keys=False, allow_unicode=True)


def run_export(args: argparse.Namespace) -> int:
    customers: list[Customer] = []

    async def body(service: CustomerService) -> int:
        customers.extend(await service.all())
        return 0

    status = _run(args, body)
    if status:
        return status
    buffer = io.StringIO()
    (write_csv if args.format == "csv" else write_yaml)(customers, buffer)
    if not args.output:
        sys.stdout.write(buffer.getvalue())
        return 0
    try:
        Path(args.output).write_text(buffer.getvalue(), encoding="utf-8")
    except OSError as exc:
        print(f"{args.output}: cannot write: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"exported {len(customers)} customer(s) to {args.output}", file=sys.stderr)
    return 0


def run_show(args: argparse.Namespace) -> int:
    async def body(service: CustomerService) -> int:
        customer = await service.get(args.id)
        if customer is None:
            print(f"no customer with id {args.id!r}", file=sys.stderr)
            return 1
        open_cases, recent = await service.recent(customer.id, limit=10)
        document = {
            "customer": cv.customer_to_dict(customer),
            "open_cases": [customer_service.case_to_dict(c) for c in open_cases],
            "recent_contacts": [customer_service.contact_to_dict(c) for c in recent],
        }
        # Round-trip through JSON: plain types only, so safe_dump never meets an enum.
        yaml.safe_dump(json.loads(json.dumps(document)), sys.stdout, sort_keys=False, allow_unicode=True)
        return 0

    return _run(args, body)
