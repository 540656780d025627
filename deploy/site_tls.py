"""Create a compose site's TLS files (site CA; api, broker and s3 certificates): see compose.yml.

    python deploy/site_tls.py --site deploy/site --public-host custody.example.org \
        --s3-host s3.custody.example.org [--ip 203.0.113.7] [--renew]

Run it as root on the host, so the API key can be given to the server container's group. The CA
key (site/ca/ca.key) signs every certificate of the site: keep it, and back it up, offline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from custody.tls import SERVER_CONTAINER_GID, SiteNames, write_site_tls


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, write the files, list them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--site", type=Path, required=True, help="directory for the site's TLS files")
    parser.add_argument("--public-host", required=True, help="DNS name of the API and the broker")
    parser.add_argument("--s3-host", required=True, help="DNS name of the S3 endpoint")
    parser.add_argument("--ip", action="append", default=[], help="a public IP address clients may dial")
    parser.add_argument("--renew", action="store_true", help="issue the service certificates again (same CA)")
    args = parser.parse_args(argv)
    gid = SERVER_CONTAINER_GID if os.geteuid() == 0 else None
    names = SiteNames(args.public_host, args.s3_host, tuple(args.ip))
    for path in write_site_tls(args.site, names, now=dt.datetime.now(dt.UTC), renew=args.renew, server_gid=gid):
        print(path)
    if gid is None:
        print(f"not root: give {args.site / 'api' / 'api.key'} to group {SERVER_CONTAINER_GID} (chgrp, chmod 0640)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
