"""MLflow model version tags that say what a deploy target serves.

After a deploy finishes, the model versions it touched are tagged `deploy.<target>.<key>`: the new one
`status=live` (with its image digest and deploy run), the ones it retired `status=retired`; after a
rollback the bad one `status=rolled_back` (with the reason) and the restored ones `status=live`.
Aliases stay the retrain pipeline's business.
"""

from __future__ import annotations

import logging

from flightdeck.deploy.backend import RevisionSpec
from flightdeck.deploy.controller import Snapshot

log = logging.getLogger(__name__)


def _registered(spec: RevisionSpec | None) -> bool:
    return bool(spec and spec.model_name and spec.model_version not in ("", "0"))


def tag_models(
    tracking_uri: str,
    target: str,
    run_id: str,
    *,
    live: RevisionSpec | None,
    others: Snapshot,
    status: str,
    reason: str = "",
    bad: RevisionSpec | None = None,
) -> None:
    """Tag the model versions a finished deploy touched (see the module docstring).

    `live`: the revision that now serves (a succeeded deploy); `bad`: the revision rolled back, tagged
    `status` and `reason`; `others`: the split before the deploy. Never raises: a tagging error is logged
    (it must not turn a finished deploy or rollback into a failure). Bare images are skipped without
    importing MLflow.
    """
    specs = [live, bad, *(RevisionSpec.from_dict(d) for d in others.specs.values())]
    if not any(_registered(s) for s in specs):
        return
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        prefix = f"deploy.{target}"

        def tag(spec: RevisionSpec, values: dict[str, str]) -> None:
            if not _registered(spec):
                return
            for k, v in values.items():
                client.set_model_version_tag(spec.model_name, spec.model_version, f"{prefix}.{k}", v)

        if live is not None:
            tag(live, {"status": "live", "digest": live.digest, "run_id": run_id})
            for d in others.specs.values():
                prev = RevisionSpec.from_dict(d)
                if prev.model_version != live.model_version:
                    tag(prev, {"status": "retired"})
        if bad is not None:
            tag(bad, {"status": status, "rollback_reason": reason[:4000], "run_id": run_id})
            for r, d in others.specs.items():
                if others.weights.get(r, 0) > 0:
                    tag(RevisionSpec.from_dict(d), {"status": "live"})
    except Exception:  # tagging must not turn a finished rollback into a failure
        log.exception("could not tag model versions in MLflow")
