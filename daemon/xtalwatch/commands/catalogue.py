"""``xtalwatch catalogue check|backup|restore|migrate``: look after the catalogue itself."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from xtalwatch.commands._common import add_config_args, settings_from_args

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("catalogue", help="check, back up, restore or move the catalogue",
                              description="Check the catalogue (read-only, service running or not), back it up "
                                          "online, restore a backup while the service is stopped, or copy it "
                                          "into PostgreSQL for a site.")
    sub = p.add_subparsers(dest="catalogue_command", required=True, metavar="{check,backup,restore,migrate}")
    check = sub.add_parser("check", help="integrity and schema check; exit 1 with one line per problem",
                           description="PRAGMA integrity_check and the schema, read-only.")
    backup = sub.add_parser("backup", help="copy the catalogue now, while the service runs or not",
                            description="SQLite's online backup into a checked file (default: "
                                        "<state>/backups/catalogue-<UTC time>.sqlite3).")
    backup.add_argument("--out", type=Path, metavar="FILE", help="where to write the backup")
    restore = sub.add_parser("restore", help="put a backup in place (service stopped)",
                             description="Checks the backup, keeps the current catalogue as "
                                         "catalogue.sqlite3.damaged-<time>, and puts the backup in its place.")
    restore.add_argument("backup", type=Path, metavar="FILE", help="a backup made by `xtalwatch catalogue backup`")
    migrate = sub.add_parser("migrate", help="copy the SQLite catalogue into an empty PostgreSQL database",
                             description="Reads <state>/catalogue.sqlite3 (never writes it; service stopped) and "
                                         "copies every table, ids kept, into an empty PostgreSQL database in one "
                                         "transaction; the row counts are checked before it commits.")
    migrate.add_argument("--to", required=True, metavar="URL", help="postgresql://user@host/db, an empty database")
    migrate.add_argument("--imager", metavar="NAME",
                         help="imager of the plates and images that name none (default: site.imager)")
    for parser in (check, backup, restore, migrate):
        add_config_args(parser, watch=False)
        parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xtalwatch.store.backup import backup_catalogue, backup_path, restore_catalogue
    from xtalwatch.store.catalogue import CATALOGUE_FILE, catalogue_problems
    from xtalwatch.store.postgres import redacted

    if args.catalogue_command == "migrate":
        return _migrate(args)
    settings = settings_from_args(args)
    if settings.catalogue.url is not None:  # check, backup and restore work on the SQLite file
        print(f"xtalwatch catalogue {args.catalogue_command}: this host's catalogue is the site's PostgreSQL "
              f"({redacted(settings.catalogue.url)}): use PostgreSQL's tools (pg_dump, pg_restore, amcheck); "
              "see docs/deploy.md", file=sys.stderr)
        return 2
    state = settings.state.dir
    if args.catalogue_command == "check":
        problems = catalogue_problems(state / CATALOGUE_FILE)
        for problem in problems:
            print(f"xtalwatch catalogue check: {problem}", file=sys.stderr)
        if not problems:
            print(f"{state / CATALOGUE_FILE}: ok")
        return 1 if problems else 0
    if args.catalogue_command == "backup":
        out = args.out if args.out is not None else backup_path(state, time.time())
        try:
            print(f"backup: {backup_catalogue(state, out)}")
        except FileNotFoundError as exc:
            print(f"xtalwatch catalogue backup: {exc}", file=sys.stderr)
            return 1
        return 0
    aside = restore_catalogue(state, args.backup)  # StateBusy, CatalogueDamaged: one line from cli.main
    kept = f"; the previous one is kept as {aside}" if aside is not None else ""
    print(f"restored {args.backup} as {state / CATALOGUE_FILE}{kept}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from xtalwatch.store.migrate import copy_catalogue
    from xtalwatch.store.postgres import redacted

    settings = settings_from_args(args, **{"site.imager": args.imager})  # --imager checked like the config's
    url = args.to
    if not url.startswith(("postgresql://", "postgres://")):
        print(f"xtalwatch catalogue migrate: --to {redacted(url)}: must be a postgresql:// URL", file=sys.stderr)
        return 2
    try:  # StateBusy, CatalogueNotCopied, CatalogueUnreachable: one line from cli.main
        counts = copy_catalogue(settings.state.dir, url, imager=settings.site.imager, progress=sys.stderr.isatty())
    except FileNotFoundError as exc:
        print(f"xtalwatch catalogue migrate: {exc}", file=sys.stderr)
        return 1
    width = max(map(len, counts))
    print(f"{'table':<{width}}  {'rows':>9}")
    for table, rows in counts.items():
        print(f"{table:<{width}}  {rows:>9,}")
    print(f"copied into {redacted(url)}: every table's row count matches the source, which is unchanged")
    print("next, set this in the config (with the password, if any) and start the service:")
    print(f"catalogue:\n  url: {redacted(url)}")
    return 0
