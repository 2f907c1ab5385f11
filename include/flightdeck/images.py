"""Build the serving image with a model baked in, label its lineage, push it, record the digest.

The build context is assembled in a temp dir from exactly what the Dockerfile COPYs (plus the
downloaded model), so the repo's large .venv never reaches the engine. A hash of every input file
and build argument is stored as a label: building the same inputs again finds that image and
reuses it, and pushing an image the registry already holds is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker

from flightdeck import settings as settings_mod
from flightdeck.errors import FlightdeckError

log = logging.getLogger(__name__)

LABEL_INPUTS = "org.flightdeck.inputs"
MODEL_DIR_IN_CONTEXT = "model"
# Signature types the lean image's native path reads without pandas (serving/sklearn_native.py).
LEAN_COLUMN_TYPES = frozenset({"double", "float", "long", "integer", "boolean", "string"})


@dataclass(frozen=True)
class ModelRef:
    """A resolved registered model version and its lineage."""

    name: str
    version: str
    run_id: str = ""
    data_version: str = ""
    alias: str = ""


@dataclass
class BuiltImage:
    tag: str  # registry/repository:tag
    image_id: str
    inputs_hash: str
    reused: bool
    labels: dict[str, str] = field(default_factory=dict)
    digest: str = ""  # registry manifest digest once pushed
    pushed: bool = False

    @property
    def repository(self) -> str:
        """The tag without its `:tag` part (registry host and repository path)."""
        return self.tag.rsplit(":", 1)[0]

    @property
    def pinned(self) -> str:
        """repo@digest when pushed, else the local image id (still immutable)."""
        return f"{self.repository}@{self.digest}" if self.digest else self.image_id

    def to_dict(self) -> dict[str, Any]:
        """The fields plus `repository` and `pinned`, JSON-ready (the XCom and deployment-record shape)."""
        return {**asdict(self), "repository": self.repository, "pinned": self.pinned}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BuiltImage:
        """The inverse of to_dict (derived and unknown keys are ignored)."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def resolve_model(name: str, version_or_alias: str, tracking_uri: str | None = None) -> ModelRef:
    """A version number or an alias (champion, challenger, ...) -> the registered version."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri or settings_mod.load().mlflow_uri)
    alias = ""
    if str(version_or_alias).isdigit():
        mv = client.get_model_version(name, str(version_or_alias))
    else:
        alias = str(version_or_alias)
        mv = client.get_model_version_by_alias(name, alias)
    data_version = ""
    if mv.run_id:
        run = client.get_run(mv.run_id)
        for src in (run.data.tags, run.data.params):
            data_version = data_version or src.get("data_version", "") or src.get("data.version", "")
    return ModelRef(name=name, version=str(mv.version), run_id=mv.run_id or "", data_version=data_version, alias=alias)


class ModelFilesMissing(FlightdeckError, FileNotFoundError):
    """A registered version whose artifacts hold no MLmodel: no image can serve it (not worth a retry)."""


class PushFailed(FlightdeckError, RuntimeError):
    """The registry refused an image push, or the push stream ended without a manifest digest."""


def check_model_dir(model_dir: Path, model: ModelRef | None = None) -> Path:
    """`model_dir` holds an MLflow model (its `MLmodel` file), or ModelFilesMissing says what is there instead."""
    model_dir = Path(model_dir)
    if (model_dir / "MLmodel").is_file():
        return model_dir
    found = (
        sorted(str(f.relative_to(model_dir)) for f in model_dir.rglob("*") if f.is_file()) if model_dir.is_dir() else []
    )
    what = f"{model.name} v{model.version}" if model else str(model_dir)
    there = f"only {found[:5]}{' ...' if len(found) > 5 else ''}" if found else "an empty folder"
    raise ModelFilesMissing(
        f"{what} has no model files: no `MLmodel` in its artifacts (MLflow returned {there}); the version was "
        "registered without a logged model. Register a version from a run that logged one; nothing was built, "
        "pushed or started"
    )


def download_model(model: ModelRef, dest: Path, tracking_uri: str | None = None) -> Path:
    """The version's model files; MLflow returns an empty folder without an error for a version that has
    none, so this checks for `MLmodel` and raises ModelFilesMissing in that case."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri or settings_mod.load().mlflow_uri)
    dest.mkdir(parents=True, exist_ok=True)
    path = mlflow.artifacts.download_artifacts(f"models:/{model.name}/{model.version}", dst_path=str(dest))
    return check_model_dir(Path(path), model)


def full_image_reason(mlmodel: Mapping[str, Any]) -> str | None:
    """Why this model needs the serving image with MLflow + pandas (`WITH_MLFLOW=1`), or None for the lean one.

    Decided from the model's own MLmodel (a parsed dict): the lean image serves the sklearn flavor
    natively (compiled pipelines, numeric matrices) and nothing else. A model the lean image still
    cannot serve (a pipeline shape the compiled path does not know) fails its build with a message
    asking for WITH_MLFLOW=1, and `build_image` then builds the full image.
    """
    flavors = mlmodel.get("flavors") or {}
    sk = flavors.get("sklearn")
    if not sk:
        loader = (flavors.get("python_function") or {}).get("loader_module") or "no python_function"
        return f"flavor {loader} is served through mlflow.pyfunc"
    if sk.get("code"):
        return "the model carries code_paths: the user's code may import pandas or MLflow"
    predict_fn = (flavors.get("python_function") or {}).get("predict_fn") or "predict"
    raw = ((mlmodel.get("signature") or {}).get("inputs")) or "[]"
    types = {str(spec.get("type")) for spec in json.loads(raw)}
    if not types:
        return None  # no signature: the lean image's load fails with that reason, which is the right error
    if not types <= LEAN_COLUMN_TYPES:
        return f"signature column types {sorted(types - LEAN_COLUMN_TYPES)} need pandas"
    if predict_fn != "predict" and not types <= {"double", "float", "long", "integer"}:
        return f"pyfunc_predict_fn {predict_fn!r} on a mixed-type signature needs pandas"
    return None


def serving_build_args(model_dir: Path | None) -> dict[str, str]:
    """The build args that choose the serving image for the model in `model_dir` (None: no baked model)."""
    if model_dir is None or not (Path(model_dir) / "MLmodel").is_file():
        return {"WITH_MLFLOW": "1"}  # fetched from MLflow at start: needs the client
    import yaml

    reason = full_image_reason(yaml.safe_load((Path(model_dir) / "MLmodel").read_text()))
    if reason:
        log.info("serving image with MLflow + pandas (WITH_MLFLOW=1): %s", reason)
        return {"WITH_MLFLOW": "1"}
    return {"WITH_MLFLOW": "0"}


def copied_paths(dockerfile: Path, target: str | None = None) -> list[str]:
    """Local sources the Dockerfile COPYs/ADDs (not `--from` stage copies), relative to its context,
    in the stages up to and including `target` (later stages are not built)."""
    sources: list[str] = []
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    in_target = False
    for line in text.splitlines():
        parts = line.strip().split()
        if not parts:
            continue
        if parts[0].upper() == "FROM":
            if in_target:
                break
            in_target = target is not None and len(parts) >= 4 and parts[-1] == target
            continue
        if parts[0].upper() not in ("COPY", "ADD"):
            continue
        args = [p for p in parts[1:] if not p.startswith("--")]
        if any(p.startswith("--from") for p in parts[1:]) or len(args) < 2:
            continue
        if args[0].startswith("["):  # JSON form
            args = json.loads(" ".join(args))
        sources.extend(a for a in args[:-1] if "$" not in a)
    return sources


def hash_tree(paths: Sequence[Path], root: Path, extra: Mapping[str, str]) -> str:
    """SHA-256 (hex) over the build args `extra` and every file under `paths` (its path relative to `root`
    and its content's SHA-256), in sorted order: equal inputs give an equal hash, so an image is reused."""
    h = hashlib.sha256()
    for key in sorted(extra):
        h.update(f"arg:{key}={extra[key]}\n".encode())
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    for f in sorted(set(files)):
        h.update(f"file:{f.relative_to(root).as_posix()}\n".encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def assemble_context(
    dockerfile: Path, model_dir: Path | None, dest: Path, source_root: Path | None = None, target: str | None = None
) -> Path:
    """A minimal build context: Dockerfile (+ .dockerignore), what it COPYs, and the model."""
    root = source_root or dockerfile.parent
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copy2(dockerfile, dest / "Dockerfile")
    if (root / ".dockerignore").exists():
        shutil.copy2(root / ".dockerignore", dest / ".dockerignore")
    for src in copied_paths(dockerfile, target):
        for match in root.glob(src.rstrip("/")) if any(c in src for c in "*?[") else [root / src.rstrip("/")]:
            if not match.exists() or match.name == MODEL_DIR_IN_CONTEXT and model_dir is not None:
                continue
            target = dest / match.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            if match.is_dir():
                shutil.copytree(
                    match, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".venv")
                )
            else:
                shutil.copy2(match, target)
    if model_dir is not None:
        shutil.copytree(model_dir, dest / MODEL_DIR_IN_CONTEXT)
    return dest


def image_labels(model: ModelRef, sha: str, inputs_hash: str, tag: str) -> dict[str, str]:
    """The image's labels: the OCI annotation keys (opencontainers image-spec, annotations.md) and the
    model's lineage (name, version, run, data version) under org.flightdeck.*; `sha` is the git commit."""
    return {
        "org.opencontainers.image.title": f"{model.name} serving",
        "org.opencontainers.image.version": f"{model.name}/{model.version}",
        "org.opencontainers.image.revision": sha,
        "org.opencontainers.image.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "org.opencontainers.image.source": "flightdeck",
        "org.opencontainers.image.ref.name": tag,
        "org.flightdeck.model.name": model.name,
        "org.flightdeck.model.version": model.version,
        "org.flightdeck.model.run_id": model.run_id,
        "org.flightdeck.data.version": model.data_version,
        LABEL_INPUTS: inputs_hash,
    }


def build_image(
    model: ModelRef,
    *,
    registry: str,
    model_dir: Path | None,
    dockerfile: Path | None = None,
    target: str | None = "serving",
    sha: str | None = None,
    repository: str | None = None,
    workdir: Path | None = None,
    client: docker.DockerClient | None = None,
) -> BuiltImage:
    """Build (or reuse) the serving image for `model`; `model_dir` is baked in as ./model.

    A `model_dir` without an `MLmodel` raises ModelFilesMissing before the Docker engine is asked anything.
    """
    if model_dir is not None:
        check_model_dir(model_dir, model)
    client = client or docker.from_env()
    dockerfile = dockerfile or settings_mod.REPO_ROOT / "Dockerfile"
    if not dockerfile.exists():
        raise FileNotFoundError(f"no Dockerfile at {dockerfile}: the serving image cannot be built")
    sha = sha or settings_mod.git_sha()
    repository = repository or model.name
    tag = f"{registry}/{repository}:v{model.version}-{sha[:7]}"
    build_args = {
        "MODEL_DIR": MODEL_DIR_IN_CONTEXT,
        "MODEL_NAME": model.name,
        "MODEL_VERSION": model.version,
        "RUN_ID": model.run_id,
        "DATA_VERSION": model.data_version,
        "GIT_SHA": sha,
        **serving_build_args(model_dir),
    }
    try:
        return _build(client, model, dockerfile, target, sha, tag, build_args, model_dir, workdir)
    except docker.errors.BuildError as e:
        asked = any("WITH_MLFLOW=1" in str(c.get("stream", c.get("error", ""))) for c in e.build_log)
        if build_args.get("WITH_MLFLOW") != "0" or not asked:
            raise
        log.warning("the lean serving image cannot serve %s/%s; building it WITH_MLFLOW=1", model.name, model.version)
        return _build(
            client, model, dockerfile, target, sha, tag, {**build_args, "WITH_MLFLOW": "1"}, model_dir, workdir
        )


def _build(
    client: docker.DockerClient,
    model: ModelRef,
    dockerfile: Path,
    target: str | None,
    sha: str,
    tag: str,
    build_args: dict[str, str],
    model_dir: Path | None,
    workdir: Path | None,
) -> BuiltImage:
    with tempfile.TemporaryDirectory(prefix="fd-build-", dir=workdir) as tmp:
        ctx = assemble_context(dockerfile, model_dir, Path(tmp) / "ctx", target=target)
        inputs = hash_tree([ctx], ctx, {**build_args, "TARGET": target or ""})
        found = client.images.list(filters={"label": f"{LABEL_INPUTS}={inputs}"})
        if found:
            image = found[0]
            image.tag(tag.rsplit(":", 1)[0], tag.rsplit(":", 1)[1])
            log.info("reusing image %s for inputs %s (tag %s)", image.short_id, inputs[:12], tag)
            return BuiltImage(tag=tag, image_id=image.id, inputs_hash=inputs, reused=True, labels=dict(image.labels))
        labels = image_labels(model, sha, inputs, tag)
        t0 = time.monotonic()
        try:
            image, logs = client.images.build(
                path=str(ctx), tag=tag, target=target, buildargs=build_args, labels=labels, rm=True, forcerm=True
            )
        except docker.errors.BuildError as e:  # the SDK keeps the log; show its tail, not just "exit 1"
            tail = [c.get("stream", c.get("error", "")).rstrip() for c in e.build_log][-40:]
            log.error("docker build of %s failed; last build output:\n%s", tag, "\n".join(x for x in tail if x))
            raise
        for chunk in logs:
            if "stream" in chunk and chunk["stream"].strip():
                log.debug("build: %s", chunk["stream"].rstrip())
        log.info("built %s (%s) in %.1fs", tag, image.short_id, time.monotonic() - t0)
        return BuiltImage(tag=tag, image_id=image.id, inputs_hash=inputs, reused=False, labels=labels)


def push_image(
    built: BuiltImage, *, auth_config: Mapping[str, str] | None = None, client: docker.DockerClient | None = None
) -> BuiltImage:
    """Push the tag and record its manifest digest; skip when the registry already has this image.

    Returns `built` with `digest` and `pushed` set. Raises PushFailed when the registry reports an error
    in the push stream or no digest."""
    client = client or docker.from_env()
    repo, tag = built.tag.rsplit(":", 1)
    image = client.images.get(built.image_id)
    known = [d.split("@", 1)[1] for d in image.attrs.get("RepoDigests", []) if d.startswith(repo + "@")]
    if known:
        try:
            data = client.images.get_registry_data(built.tag, auth_config=dict(auth_config or {}) or None)
            if data.id in known:
                log.info("registry already has %s at %s: push skipped", built.tag, data.id)
                built.digest, built.pushed = data.id, False
                return built
        except docker.errors.APIError as e:  # tag absent (or registry reset): push it
            log.info("registry lookup of %s failed (%s): pushing", built.tag, e)
    digest = ""
    for chunk in client.images.push(
        repo, tag=tag, stream=True, decode=True, auth_config=dict(auth_config) if auth_config else None
    ):
        if "error" in chunk:  # push errors arrive in the stream, they are not raised
            raise PushFailed(f"push of {built.tag} failed: {chunk['error']}")
        digest = chunk.get("aux", {}).get("Digest", digest)
    if not digest:
        raise PushFailed(f"push of {built.tag} reported no digest")
    log.info("pushed %s -> %s", built.tag, digest)
    built.digest, built.pushed = digest, True
    return built


def pin_given(ref: str, client: docker.DockerClient | None = None) -> dict[str, Any]:
    """A ready-made image reference pinned to what it points at now (registry digest, else image id)."""
    if "@sha256:" in ref:  # already pinned: nothing to ask the Docker engine
        digest = ref.split("@", 1)[1]
        return {"tag": ref, "pinned": ref, "digest": digest, "reused": True, "given": True}
    client = client or docker.from_env()
    repo = ref.split("@")[0].rsplit(":", 1)[0] if ":" in ref.split("/")[-1] or "@" in ref else ref
    try:
        digest = client.images.get_registry_data(ref).id
        pinned = f"{repo}@{digest}"
    except docker.errors.APIError:  # not in a registry: the local image id is just as immutable
        digest, pinned = "", client.images.get(ref).id
    log.info("given image %s pinned as %s", ref, pinned)
    return {"tag": ref, "pinned": pinned, "digest": digest, "reused": True, "given": True}


TRAIN_TARGET = "train"
TRAIN_REPOSITORY = "flightdeck-train"


def ensure_train_image(
    *,
    registry: str | None = None,
    repository: str = TRAIN_REPOSITORY,
    dockerfile: Path | None = None,
    push: bool = True,
    workdir: Path | None = None,
    client: docker.DockerClient | None = None,
) -> BuiltImage:
    """The `train` image of this checkout (the Dockerfile's train target: the lock, include/, params.yaml,
    dvc.yaml), tagged `<registry>/<repository>:<first 12 hex of its inputs hash>` (registry default
    $FLIGHTDECK_REGISTRY) and pushed there unless `push` is False.

    Content-addressed like the serving image: an image labelled with the same inputs hash is reused, and a
    push the registry already holds is skipped, so calling this before every train step costs a hash of the
    context. Raises docker.errors.BuildError (the log's tail is logged) and PushFailed."""
    client = client or docker.from_env()
    dockerfile = dockerfile or settings_mod.REPO_ROOT / "Dockerfile"
    registry = registry or settings_mod.load().registry
    with tempfile.TemporaryDirectory(prefix="fd-train-build-", dir=workdir) as tmp:
        ctx = assemble_context(dockerfile, None, Path(tmp) / "ctx", target=TRAIN_TARGET)
        inputs = hash_tree([ctx], ctx, {"TARGET": TRAIN_TARGET})
        tag = f"{registry}/{repository}:{inputs[:12]}"
        found = client.images.list(filters={"label": f"{LABEL_INPUTS}={inputs}"})
        if found:
            image = found[0]
            image.tag(tag.rsplit(":", 1)[0], tag.rsplit(":", 1)[1])
            log.info("reusing train image %s for inputs %s", image.short_id, inputs[:12])
            built = BuiltImage(tag=tag, image_id=image.id, inputs_hash=inputs, reused=True, labels=dict(image.labels))
        else:
            labels = {
                "org.opencontainers.image.title": "flightdeck-train",
                "org.opencontainers.image.revision": settings_mod.git_sha(),
                "org.opencontainers.image.ref.name": tag,
                LABEL_INPUTS: inputs,
            }
            t0 = time.monotonic()
            try:
                image, _ = client.images.build(
                    path=str(ctx), tag=tag, target=TRAIN_TARGET, labels=labels, rm=True, forcerm=True
                )
            except docker.errors.BuildError as e:
                tail = [c.get("stream", c.get("error", "")).rstrip() for c in e.build_log][-40:]
                log.error("docker build of %s failed; last build output:\n%s", tag, "\n".join(x for x in tail if x))
                raise
            log.info("built train image %s (%s) in %.1fs", tag, image.short_id, time.monotonic() - t0)
            built = BuiltImage(tag=tag, image_id=image.id, inputs_hash=inputs, reused=False, labels=labels)
    return push_image(built, client=client) if push else built
