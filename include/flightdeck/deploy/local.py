"""The embedded target: containers on the local Docker engine behind a local HAProxy.

Each revision gets `replicas` containers, each published on a fixed LB slot port; the container
labels are the source of truth for which slot belongs to which revision (so every Airflow task,
in its own process, sees the same state), and a small weights file lets a restarted HAProxy get
the traffic split back.

Request counts are per revision, not per slot: HAProxy's counters belong to the slot and carry over
from its earlier occupants (and 2.6 cannot reset one server's), so when a revision's container takes
a slot its counters are written down as a baseline (counters.json in the state folder) and the
revision is reported the difference; see `slot_counts` for an LB restart.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import docker
from docker.errors import ImageNotFound

from flightdeck import settings as settings_mod
from flightdeck.deploy.backend import (
    DEFAULT_ROLL_PLAN,
    RevisionSpec,
    RollNotSupported,
    RollPlan,
    RollSpec,
    TargetHealth,
)
from flightdeck.deploy.haproxy import COUNTERS, HAProxy, HealthCheck, LbConfig, S3Relay
from flightdeck.errors import FlightdeckError

log = logging.getLogger(__name__)

CONTAINER_PORT = 8080
HEALTH_PORT = 8081  # the serving image's SERVING_HEALTH_PORT: where HAProxy's checks go
KEYS_MOUNT = "/run/secrets/serving-api-keys"  # where the API keys file appears in a serving container
S3_RELAY_OFFSET = 99  # the LB's S3 relay listens on the bridge gateway at port_base + 99 (slots use +1.., +101..)
WEIGHT_SCALE = 2  # HAProxy weights run 0..256: percent x 2 keeps 1% steps with room for replicas
STANDBY_WEIGHT = 1  # a 0% revision named in set_weights(standby=...): a redispatch target for retries
L_TARGET, L_REV, L_SLOT, L_SPEC, L_LB = (
    "org.flightdeck.target",
    "org.flightdeck.revision",
    "org.flightdeck.slot",
    "org.flightdeck.spec",
    "org.flightdeck.lb",
)


class LocalTargetError(FlightdeckError, RuntimeError):
    """The local target cannot do what was asked: no free LB slot, or traffic for a revision it does not run."""


def slot_counts(book: Mapping | None, now: Mapping[str, int], instance: str) -> dict[str, int]:
    """The request counters of one LB slot that belong to the container holding it now.

    book: the slot's entry in counters.json, {"container", "lb": HAProxy instance at the baseline,
    "base": {counter: n} then, "carried": {counter: n} counted before that}, or None when the slot
    has no baseline for this container (started before baselines existed): then the raw counters.
    now: the slot's counters now (`HAProxy.counters()[slot]`, {} when HAProxy is down); instance:
    `HAProxy.instance()` now ("" when down). Same HAProxy process and no counter below its base:
    carried + (now - base). Otherwise HAProxy restarted, or its counters were cleared, since the
    baseline and counts from 0 again: carried + now (never negative; what was counted between the
    last `save_counters` and an unannounced restart is lost). Returns {counter: n} for COUNTERS.
    """
    now = {k: int(now.get(k) or 0) for k in COUNTERS}
    if not book:
        return now
    base = {k: int((book.get("base") or {}).get(k) or 0) for k in COUNTERS}
    carried = {k: int((book.get("carried") or {}).get(k) or 0) for k in COUNTERS}
    if not instance:  # HAProxy down: what was saved
        return carried
    same = book.get("lb") == instance and all(now[k] >= base[k] for k in COUNTERS)
    return {k: carried[k] + now[k] - (base[k] if same else 0) for k in COUNTERS}


def s3_relay_for(client: docker.DockerClient, lb: LbConfig) -> S3Relay | None:
    """The S3 relay an LB needs so its containers reach S3, or None when S3 is not on this machine (AWS: the
    task's own credentials and network reach it) or Docker's `bridge` network has no gateway address.

    SeaweedFS listens on 127.0.0.1 and containers sit on the bridge, so HAProxy relays TCP from the bridge's
    gateway IP (at lb.port_base + S3_RELAY_OFFSET) to the endpoint. Raises docker.errors.DockerException
    when the engine does not answer."""
    endpoint = settings_mod.load().s3_endpoint
    if not settings_mod.is_local_endpoint(endpoint):
        return None
    url = urlparse(endpoint)
    try:
        gateway = client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]
    except (KeyError, IndexError, TypeError):
        log.warning("docker's bridge network has no gateway: containers cannot reach S3 at %s", endpoint)
        return None
    default_port = 443 if url.scheme == "https" else 80
    return S3Relay(gateway, lb.port_base + S3_RELAY_OFFSET, url.hostname or "127.0.0.1", url.port or default_port)


class LocalBackend:
    """Backend over Docker SDK containers and HAProxy's runtime API."""

    rolls_in_place = False  # every strategy starts a new revision beside the live one

    def __init__(
        self,
        lb: LbConfig,
        name: str = "local",
        client: docker.DockerClient | None = None,
        drain_timeout: float = 5.0,
        relay_s3: bool = True,
    ) -> None:
        """`relay_s3`: give `lb` an S3 relay (s3_relay_for) when it has none and S3 is on this machine."""
        self.name = name
        self.docker = client or docker.from_env()
        if relay_s3 and lb.s3_relay is None:
            relay = s3_relay_for(self.docker, lb)
            if relay is not None:
                lb = dataclasses.replace(lb, s3_relay=relay)
        self.lb = lb
        self.haproxy = HAProxy(lb)
        self.drain_timeout = drain_timeout

    def s3_env(self, spec: RevisionSpec) -> dict[str, str]:
        """What a container of `spec` needs to write captures to a local S3: the relay's endpoint and the local
        keys (added at container start, never to the spec, whose env lands in deployment records). Empty when
        the revision does not capture or S3 is not local (on AWS the task role writes)."""
        relay = self.lb.s3_relay
        if relay is None or not spec.env.get("CAPTURE_S3_URI"):
            return {}
        env = settings_mod.environment()
        out = {"AWS_ENDPOINT_URL_S3": relay.url, "AWS_DEFAULT_REGION": env.get("AWS_DEFAULT_REGION", "us-east-1")}
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            if env.get(name):
                out[name] = env[name]
        return out

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def _lb_id(self) -> str:
        # the platform instance is its state folder: a deleted or other instance's containers are not ours
        return str(self.lb.state_dir)

    @property
    def _weights_path(self) -> Path:
        return self.lb.state_dir / "weights.json"

    @property
    def _specs_path(self) -> Path:
        return self.lb.state_dir / "specs.json"

    @property
    def _counters_path(self) -> Path:
        return self.lb.state_dir / "counters.json"

    def _take_baseline(self, revision: str, slots: Iterable[tuple[int, str]]) -> None:
        """Write down the counters of slots (slot, container id) a revision's new containers just took."""
        counters, instance = self.haproxy.counters(), self.haproxy.instance()
        books = self._read_json(self._counters_path)
        for slot, container in slots:
            books[str(slot)] = {
                "revision": revision,
                "container": container,
                "lb": instance,
                "base": counters.get(slot, dict.fromkeys(COUNTERS, 0)),
                "carried": dict.fromkeys(COUNTERS, 0),
            }
        self._write_json(self._counters_path, books)

    def _running_config(self) -> str:
        try:
            return self.lb.cfg_path.read_text()
        except OSError:
            return ""

    def _read_json(self, path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def _write_json(self, path: Path, data: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)

    def _containers(self, revision: str | None = None) -> list:
        # scoped to this LB too: two platforms on one Docker engine must not adopt each other's containers
        labels = [f"{L_TARGET}={self.name}", f"{L_LB}={self._lb_id}"]
        if revision is not None:
            labels.append(f"{L_REV}={revision}")
        return self.docker.containers.list(all=True, filters={"label": labels})

    def slots(self, revision: str) -> list[int]:
        """The LB slots (1-based, sorted) the revision's containers occupy on this target."""
        return sorted(int(c.labels[L_SLOT]) for c in self._containers(revision))

    def _free_slots(self, n: int) -> list[int]:
        used = {int(c.labels[L_SLOT]) for c in self._containers()}
        free = [s for s in range(1, self.lb.slots + 1) if s not in used]
        if len(free) < n:
            raise LocalTargetError(f"target {self.name}: {n} LB slots needed, {len(free)} free")
        return free[:n]

    def _ensure_image(self, ref: str) -> None:
        try:
            self.docker.images.get(ref)
        except ImageNotFound:
            log.info("pulling %s", ref)
            self.docker.images.pull(ref)

    # -- Backend interface -------------------------------------------------------------------------
    def start_revision(self, spec: RevisionSpec) -> None:
        """Backend.start_revision: one container per replica on a free slot, the slots in maintenance.

        Raises LocalTargetError when fewer LB slots are free than `spec.replicas`, FileNotFoundError when
        the API keys file is set but missing, docker's errors when the engine refuses."""
        if not self.haproxy.running():
            self.haproxy.start()
        existing = self._containers(spec.revision)
        running = [c for c in existing if c.status == "running"]
        if existing and len(running) == spec.replicas:
            log.info("revision %s already has %d running containers: adopting them", spec.revision, len(running))
        else:
            for c in existing:  # half-started earlier (task retried): start clean
                c.remove(force=True)
            self._ensure_image(spec.image)
            keys = settings_mod.load().serving_api_keys_file  # model-endpoint API keys (serving/auth.py), "" = off
            if keys and not Path(keys).is_file():
                raise FileNotFoundError(f"FLIGHTDECK_SERVING_API_KEYS_FILE {keys} is not a file")
            auth_env = {"SERVING_API_KEYS_FILE": KEYS_MOUNT} if keys else {}
            s3_env = self.s3_env(spec)  # the spec's own env (e.g. another AWS_ENDPOINT_URL_S3) wins over it
            if s3_env and "listen s3_relay" not in self._running_config():
                log.warning("the running HAProxy has no S3 relay (started before it existed): restart the LB")
            auth_volumes = {str(Path(keys).resolve()): {"bind": KEYS_MOUNT, "mode": "ro"}} if keys else None
            taken: list[tuple[int, str]] = []
            for i, slot in enumerate(self._free_slots(spec.replicas)):
                name = f"fd-{self.name}-{self.lb.bind_port}-{spec.revision}-{i}"
                c = self.docker.containers.run(
                    spec.image,
                    detach=True,
                    name=name,
                    labels={
                        L_TARGET: self.name,
                        L_LB: self._lb_id,
                        L_REV: spec.revision,
                        L_SLOT: str(slot),
                        L_SPEC: json.dumps(spec.to_dict()),
                    },
                    environment={**s3_env, **spec.env, **auth_env},
                    volumes=auth_volumes,
                    ports={
                        f"{CONTAINER_PORT}/tcp": ("127.0.0.1", self.lb.slot_port(slot)),
                        f"{HEALTH_PORT}/tcp": ("127.0.0.1", self.lb.health_port(slot)),
                    },
                )
                log.info(
                    "started container %s (%s) for revision %s on slot %d (port %d)",
                    name,
                    c.short_id,
                    spec.revision,
                    slot,
                    self.lb.slot_port(slot),
                )
                taken.append((slot, c.id))
            # before the slots leave maintenance: what the slots counted so far was their earlier occupants'
            self._take_baseline(spec.revision, taken)
        specs = self._read_json(self._specs_path)
        specs[spec.revision] = spec.to_dict()
        self._write_json(self._specs_path, specs)
        # In the LB with weight 0: health checks run, no traffic yet (an adopted slot keeps its weight).
        for slot in self.slots(spec.revision):
            self.haproxy.enable(slot)

    def target_health(self, revision: str) -> TargetHealth:
        """The revision's containers as HAProxy sees them, and the requests it answered itself.

        Counts are this revision's only: from when its containers took their slots (see
        `slot_counts`), its weighted server and its backup twin together. Raises OSError when the
        runtime API stops answering mid-read, docker.errors.DockerException when the engine does.
        """
        containers = self._containers(revision)
        up = self.haproxy.running()
        stats = self.haproxy.stats() if up else {}
        counters = self.haproxy.counters() if up else {}
        instance = self.haproxy.instance() if up else ""
        books = self._read_json(self._counters_path)
        states: dict[str, str] = {}
        healthy = requests = errors = retried = 0
        for c in containers:
            slot = int(c.labels[L_SLOT])
            row = stats.get(slot, {})
            status = row.get("status", "NOLB")
            if c.status != "running":
                status = f"CONTAINER_{c.status.upper()}"
            states[f"{c.name}@s{slot}"] = status
            # "UP 1/2" = one failed check of `fall`: HAProxy still routes to it; its threshold debounces
            if status == "UP" or status.startswith("UP "):
                healthy += 1
            # A request that failed here and that HAProxy retried on another server counts in this
            # server's `wretr`, not in its hrsp_5xx: it is this revision's error all the same.
            book = books.get(str(slot))
            if book and book.get("container") != c.id:
                book = None  # another container's baseline: this one was started without one
            n = slot_counts(book, counters.get(slot, {}), instance)
            retried += n["wretr"]
            requests += sum(n[f"hrsp_{k}xx"] for k in range(1, 6)) + n["wretr"]
            errors += n["hrsp_5xx"] + n["wretr"]
        spec = self.spec(revision)
        total = spec.replicas if spec else len(containers)
        return TargetHealth(
            revision=revision,
            total=total,
            healthy=healthy,
            states=states,
            requests=requests,
            errors_5xx=errors,
            retried=retried,
        )

    def set_weights(self, weights: Mapping[str, int], standby: Collection[str] = ()) -> None:
        """Traffic percent per revision as HAProxy weights on its slots (see Backend.set_weights).

        Raises LocalTargetError when a revision given traffic has no containers, HAProxyError when
        the runtime API refuses a change.
        """
        plan: dict[int, int] = {}
        for revision, pct in weights.items():
            slots = self.slots(revision)
            if not slots and pct > 0:
                raise LocalTargetError(f"revision {revision} has no containers on target {self.name}")
            for slot in slots:
                if pct > 0:
                    plan[slot] = max(1, round(pct * WEIGHT_SCALE / len(slots)))
                else:
                    # HAProxy redispatches a failed request only to an active server with a weight,
                    # never to a backup while an active one is up; so a standby revision keeps weight
                    # 1 (of 200: ~0.5% of requests) and takes the retries while the new one is watched.
                    plan[slot] = STANDBY_WEIGHT if revision in standby else 0
        # a running revision at 0% stays a backup (see haproxy.render_config) until it is stopped;
        # backups go on before weights drop and off after weights rise, so there is always a server
        for slot, w in plan.items():
            if w == 0:
                self.haproxy.set_backup(slot, True)
        # raise the gaining side first so the backend never has zero total weight mid-change
        for slot, w in sorted(plan.items(), key=lambda kv: -kv[1]):
            self.haproxy.set_weight(slot, w)
        for slot, w in plan.items():
            if w > 0:
                self.haproxy.set_backup(slot, False)
        self._write_json(self._weights_path, {r: int(p) for r, p in weights.items()})
        log.info("target %s weights now %s", self.name, dict(weights))

    def stop_revision(self, revision: str) -> None:
        """Backend.stop_revision: weight 0 and drain (up to `drain_timeout` seconds), then stop and remove
        the containers and forget their weights and counter baselines."""
        containers = self._containers(revision)
        if self.haproxy.running():
            slots = [int(c.labels[L_SLOT]) for c in containers]
            for slot in slots:
                self.haproxy.set_backup(slot, False)
                self.haproxy.set_weight(slot, 0)
                self.haproxy.drain(slot)
            deadline = time.monotonic() + self.drain_timeout
            while slots and time.monotonic() < deadline:
                stats = self.haproxy.stats()
                if all(int(stats.get(s, {}).get("scur") or 0) == 0 for s in slots):
                    break
                time.sleep(0.1)
            for slot in slots:
                self.haproxy.disable(slot)
        for c in containers:
            c.stop(timeout=5)
            c.remove(force=True)
            log.info("stopped container %s of revision %s", c.name, revision)
        weights = self._read_json(self._weights_path)
        if weights.pop(revision, None) is not None:
            self._write_json(self._weights_path, weights)
        books = self._read_json(self._counters_path)
        gone = {
            str(c.labels[L_SLOT]) for c in containers if books.get(str(c.labels[L_SLOT]), {}).get("container") == c.id
        }
        if gone:
            self._write_json(self._counters_path, {k: v for k, v in books.items() if k not in gone})

    def weights(self) -> dict[str, int]:
        """Backend.weights: the last percent set for each revision that has containers (0 if never set)."""
        live = {c.labels[L_REV] for c in self._containers()}
        stored = self._read_json(self._weights_path)
        return {r: int(stored.get(r, 0)) for r in sorted(live)}

    def spec(self, revision: str) -> RevisionSpec | None:
        """Backend.spec: from a container's label, else from the specs file the target keeps."""
        for c in self._containers(revision):
            return RevisionSpec.from_dict(json.loads(c.labels[L_SPEC]))
        stored = self._read_json(self._specs_path).get(revision)
        return RevisionSpec.from_dict(stored) if stored else None

    def prepare_roll(self, spec: RevisionSpec, plan: RollPlan = DEFAULT_ROLL_PLAN) -> RollSpec:
        """Not on this target: raises RollNotSupported (every strategy starts a new revision here)."""
        raise RollNotSupported(
            f"the local target does not roll {spec.revision} in place: strategies start a new revision beside it"
        )

    def roll_back(self, roll: RollSpec) -> None:
        """Not on this target: raises RollNotSupported (nothing here was rolled in place)."""
        raise RollNotSupported(f"the local target does not roll in place: nothing to roll back for {roll}")

    # -- LB lifecycle (flightdeck.deploy.lb_service) -------------------------------------------------
    def save_counters(self) -> int:
        """Before HAProxy stops: fold what each slot counted for its container into its baseline's
        `carried` counts, so a revision's counts survive the restart (`slot_counts`).

        Returns the number of slots saved. Raises OSError when the runtime API does not answer,
        docker.errors.DockerException when the engine does not.
        """
        counters, instance = self.haproxy.counters(), self.haproxy.instance()
        books = self._read_json(self._counters_path)
        saved = 0
        for c in self._containers():
            slot = int(c.labels[L_SLOT])
            book = books.get(str(slot))
            if not book or book.get("container") != c.id:
                book = {"revision": c.labels[L_REV], "container": c.id}
            now = counters.get(slot, dict.fromkeys(COUNTERS, 0))
            books[str(slot)] = {**book, "carried": slot_counts(book, now, instance), "lb": instance, "base": now}
            saved += 1
        self._write_json(self._counters_path, books)
        return saved

    def stop_containers(self) -> int:
        """`make down`: stop (not remove) this LB's model containers, so nothing of ours keeps running."""
        running = [c for c in self._containers() if c.status == "running"]
        for c in running:
            c.stop(timeout=5)
        return len(running)

    def resync(self) -> None:
        """After an LB (re)start: restart stopped containers of live revisions, put their slots back."""
        weights = self.weights()
        for c in self._containers():
            if weights.get(c.labels.get(L_REV), 0) > 0 and c.status != "running":
                c.start()
        for revision in weights:
            for slot in self.slots(revision):
                self.haproxy.set_weight(slot, 0)
                self.haproxy.enable(slot)
        if weights:
            self.set_weights(weights)


def platform_lb(check: HealthCheck | None = None) -> LbConfig:
    """The platform's public LB: settings.lb_url, slot ports from FLIGHTDECK_LB_SLOT_BASE (8400+)."""
    s = settings_mod.load()
    url = urlparse(s.lb_url)
    port_base = int(os.environ.get("FLIGHTDECK_LB_SLOT_BASE") or 8400)
    lb = LbConfig(
        state_dir=s.state_dir / "deploy" / "lb",
        bind_host=url.hostname or "127.0.0.1",
        bind_port=url.port or 8090,
        port_base=port_base,
        slots=16,
        check=check or HealthCheck(),
    )
    try:  # the relay is part of the config HAProxy starts with (lb_service.start renders this LbConfig)
        relay = s3_relay_for(docker.from_env(), lb)
    except docker.errors.DockerException as e:
        log.warning("docker unavailable, the LB starts without an S3 relay for capture: %s", e)
        relay = None
    return dataclasses.replace(lb, s3_relay=relay)


def platform_backend() -> LocalBackend:
    """The platform's local target (name "local") on `platform_lb()`; raises docker.errors.DockerException
    when the Docker engine cannot be reached."""
    return LocalBackend(platform_lb(), name="local")
