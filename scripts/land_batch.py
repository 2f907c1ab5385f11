"""Land the next data batch for the retrain DAG (`--kind good|degraded|malformed`)."""

from __future__ import annotations

import argparse
import logging

from flightdeck import pipeline_config
from flightdeck.data import generate, land
from flightdeck.data.store import ObjectStore
from flightdeck.provisioning import use_local_aws_default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default=None, help="a key of params.yaml `datasets` (default dataset.name)")
    parser.add_argument("--kind", choices=land.KINDS, default="good")
    parser.add_argument("--malformed-kind", choices=generate.MALFORMED_KINDS, default="missing_column")
    parser.add_argument("--seq", type=int, default=None, help="batch number (default: the next unused one)")
    parser.add_argument("--namespace", default=None, help="an isolated lineage (see pipeline_config)")
    parser.add_argument("--aws-conn-id", default="aws_default")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    use_local_aws_default()  # outside Airflow: aws_default is the local platform's S3 unless set
    cfg = pipeline_config.load(args.dataset, namespace=args.namespace)
    key = land.land(cfg, ObjectStore(aws_conn_id=args.aws_conn_id), args.kind, args.malformed_kind, args.seq)
    print(key)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
