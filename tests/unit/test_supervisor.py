"""The platform's supervisor without the platform: the port-taken error, pid files, stop's TERM then KILL on
a process group (with throw-away `sleep` children), and the environment and commands each service gets."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from flightdeck.supervisor import embedded
from flightdeck.supervisor.process import (
    PortTaken,
    Service,
    SupervisorError,
    check_ports,
    group_alive,
    read_pid,
    running_pid,
    start,
    stop,
    wait_until,
    write_pid,
)

PORTS = {
    "FLIGHTDECK_STATE_DIR": "/srv/fd-state",
    "FLIGHTDECK_S3_PORT": "9333",
    "FLIGHTDECK_MLFLOW_PORT": "9001",
    "FLIGHTDECK_AIRFLOW_PORT": "9180",
    "FLIGHTDECK_REGISTRY": "127.0.0.1:9050",
}


@pytest.fixture
def listener():
    """A TCP port on 127.0.0.1 that something (this socket) holds."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _sleeper(tmp_path: Path, name: str = "sleeper", code: str = "import time; time.sleep(60)", **kw) -> Service:
    return Service(
        name=name,
        command=[sys.executable, "-c", code],
        pid_file=tmp_path / "run" / f"{name}.pid",
        log_file=tmp_path / "logs" / f"{name}.log",
        match="time.sleep(60)",
        **kw,
    )


def test_port_taken_names_the_port_the_service_and_the_variable(tmp_path, listener):
    service = _sleeper(tmp_path, ports=[listener], port_variable="FLIGHTDECK_MLFLOW_PORT", label="MLflow")
    with pytest.raises(PortTaken) as err:
        start(service)
    assert str(err.value) == (
        f"port {listener} is taken (needed by MLflow); free it or set FLIGHTDECK_MLFLOW_PORT to another port"
    )
    assert isinstance(err.value, SupervisorError) and err.value.port == listener
    assert not service.pid_file.exists(), "nothing started, no pid file"


def test_free_ports_pass(tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    check_ports(_sleeper(tmp_path, ports=[port], port_variable="X"))


def test_pid_file_round_trip_and_unreadable_files(tmp_path):
    pid_file = tmp_path / "run" / "x.pid"
    assert read_pid(pid_file) is None
    write_pid(pid_file, 4242)
    assert pid_file.read_text() == "4242\n" and read_pid(pid_file) == 4242
    pid_file.write_text("not a pid\n")
    assert read_pid(pid_file) is None
    pid_file.write_text("")
    assert read_pid(pid_file) is None


def test_a_stale_or_reused_pid_is_not_taken_for_the_service(tmp_path):
    service = _sleeper(tmp_path)
    write_pid(service.pid_file, 2**22 + 1)  # above pid_max's default: no such process
    assert running_pid(service) is None
    write_pid(service.pid_file, os.getpid())  # alive, but not a `sleep` we started in its own group
    assert running_pid(service) is None
    assert stop(service) == "sleeper: not running (stale pid file)"
    assert not service.pid_file.exists()
    assert stop(service) == "sleeper: not running"


def test_start_runs_the_service_in_its_own_group_and_stop_ends_the_group(tmp_path):
    # the service forks a grandchild: stop must reach it through the process group
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    )
    service = _sleeper(tmp_path, code=code, env={"FD_SUPERVISOR_TEST": "1"})
    pid = start(service)
    try:
        assert read_pid(service.pid_file) == pid and running_pid(service) == pid
        assert os.getpgid(pid) == pid, "a session of its own: its pid is its process group"
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"FD_SUPERVISOR_TEST=1" in environ
        t0 = time.monotonic()
        assert stop(service) == "sleeper: stopped"
        assert time.monotonic() - t0 < 5
        assert not group_alive(pid) and not service.pid_file.exists()
    finally:
        if group_alive(pid):
            os.killpg(pid, 9)


def test_stop_kills_what_ignores_sigterm_after_the_grace(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    service = _sleeper(tmp_path, code=code, grace_s=1.0)
    pid = start(service)
    time.sleep(0.5)  # let it install the handler
    t0 = time.monotonic()
    assert stop(service) == "sleeper: stopped"
    waited = time.monotonic() - t0
    assert 1.0 <= waited < 4, waited
    assert not group_alive(pid)


def test_a_program_that_does_not_exist_is_a_supervisor_error(tmp_path):
    service = Service(
        name="ghost", command=[str(tmp_path / "no-such-program")], pid_file=tmp_path / "g.pid", log_file=tmp_path / "g"
    )
    with pytest.raises(SupervisorError, match="ghost: could not start"):
        start(service)
    assert not service.pid_file.exists()


def test_airflow_gets_exactly_the_platform_variables():
    env = embedded.full_environment(PORTS)
    root = embedded.ROOT
    assert embedded.airflow_env(env) == {
        "AIRFLOW_HOME": "/srv/fd-state/airflow",
        "AIRFLOW__CORE__DAGS_FOLDER": f"{root}/dags",
        "AIRFLOW__CORE__PLUGINS_FOLDER": f"{root}/plugins",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "flightdeck.preloading_executor.PreloadingLocalExecutor",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__API__PORT": "9180",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "9893",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "9894",
        "AIRFLOW__API__BASE_URL": "http://localhost:9180",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://localhost:9180/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "15",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "15",
        "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
        "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": "s3://flightdeck-logs/airflow",
        "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": "aws_default",
        "AIRFLOW_CONN_MLFLOW_DEFAULT": "http://127.0.0.1:9001",
    }
    # the platform's own variables reach Airflow through the caller's environment (settings' defaults)
    assert env["FLIGHTDECK_S3_ENDPOINT"] == "http://127.0.0.1:9333"
    assert '"endpoint_url": "http://127.0.0.1:9333"' in env["AIRFLOW_CONN_AWS_DEFAULT"]


def test_airflow_keeps_the_knobs_the_caller_set():
    env = embedded.full_environment(
        {
            **PORTS,
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "",  # empty counts as unset, as ${X:-15}
        }
    )
    got = embedded.airflow_env(env)
    assert got["AIRFLOW__CORE__PARALLELISM"] == "8"
    assert got["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"] == "5"
    assert got["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] == "15"


def test_each_service_command_ports_and_files():
    s = embedded.services(embedded.full_environment(PORTS))
    assert list(s) == ["s3", "mlflow", "dockerd", "registry", "airflow"]
    weed = s["s3"]
    assert weed.command[1:] == [
        "mini",
        "-dir=/srv/fd-state/s3",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-s3.port=9333",
        "-master.port=9334",
        "-volume.port=9335",
        "-filer.port=9336",
        "-webdav.port=9337",
        "-admin.port=9338",
        "-debug.port=9339",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    # every port weed listens on (and their gRPC twins) is checked; the variable that moves them all is named
    assert list(weed.ports) == [9333, 9334, 9335, 9336, 9337, 9338, 19333, 19334, 19335, 19336, 19338]
    assert weed.port_variable == "FLIGHTDECK_S3_PORT" and weed.pid_file == Path("/srv/fd-state/run/s3.pid")
    mlflow = s["mlflow"]
    assert mlflow.command[1:] == [
        "server",
        "--backend-store-uri",
        "sqlite:////srv/fd-state/mlflow/mlflow.db",
        "--artifacts-destination",
        "s3://flightdeck-mlflow/artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        "9001",
        "--workers",
        "1",
    ]
    assert mlflow.env == {"MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9333"}
    assert mlflow.log_file == Path("/srv/fd-state/logs/mlflow.log")
    airflow = s["airflow"]
    assert airflow.command[1:] == ["standalone"] and airflow.cwd == Path("/srv/fd-state/airflow")
    assert list(airflow.ports) == [9180, 9893, 9894] and airflow.grace_s == 30
    assert s["registry"].ports == [9050] and s["registry"].port_variable == "FLIGHTDECK_REGISTRY"
    assert s["dockerd"].name == "docker engine" and s["dockerd"].grace_s == 30
    assert s["dockerd"].command[1:] == ["--live-restore"]
    assert [x.grace_s for x in (weed, mlflow, s["registry"])] == [20, 20, 20]


def test_registry_config_keeps_its_data_in_the_state_folder():
    assert embedded.registry_config(embedded.full_environment(PORTS)) == (
        "version: 0.1\n"
        "log: {level: warn}\n"
        "storage:\n"
        "  filesystem: {rootdirectory: /srv/fd-state/registry/data}\n"
        "  delete: {enabled: true}\n"
        'http: {addr: "127.0.0.1:9050"}\n'
    )


def test_a_port_variable_that_is_not_a_number_is_named():
    with pytest.raises(SupervisorError, match="FLIGHTDECK_S3_PORT='83x3' is not a port number"):
        embedded.services(embedded.full_environment({**PORTS, "FLIGHTDECK_S3_PORT": "83x3"}))


def test_status_rows_line_up_as_before():
    assert embedded._row("s3", True, "http://127.0.0.1:8333") == "  s3               up    http://127.0.0.1:8333"
    assert embedded._row("base image", False) == "  base image       DOWN"


def test_an_exited_leader_left_a_zombie_is_not_running(tmp_path):
    # the leader of a stopped service is re-parented to PID 1, which may reap it late: stop and status must
    # not wait on (or report) a zombie; here the unreaped zombie is our own child
    service = _sleeper(tmp_path, name="quick", code="import time; time.sleep(0.2)  # time.sleep(60)")
    pid = start(service)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z":
        time.sleep(0.05)
    assert Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z", "exited, not yet reaped"
    assert not group_alive(pid) and running_pid(service) is None
    t0 = time.monotonic()
    assert stop(service) == "quick: not running (stale pid file)"
    assert time.monotonic() - t0 < 1


def test_processes_of_finds_a_service_that_renamed_itself_by_its_process_group(tmp_path):
    # Celery workers and Airflow's api-server set their title, which overwrites the environment /proc shows:
    # the service and the child it forked are found through the group its pid file names.
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    )
    service = _sleeper(tmp_path, code=code)
    pid = start(service, {"PATH": os.environ.get("PATH", "")})  # no FLIGHTDECK_STATE_DIR in its environment
    try:
        assert wait_until(lambda: len(embedded.processes_of(tmp_path)) == 2, 10, interval_s=0.1)
        assert pid in embedded.processes_of(tmp_path)
        assert embedded.processes_of(tmp_path / "elsewhere") == {}
    finally:
        stop(service)


def test_stop_reaches_a_task_that_moved_to_a_group_of_its_own(tmp_path):
    # as Airflow's task supervisor does with each task: the grandchild leaves the service's process group
    code = (
        "import os, subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import os, time; os.setpgid(0, 0); time.sleep(60)']); "
        "open(sys.argv[1], 'w').write(str(p.pid)); time.sleep(60)"
    )
    marker = tmp_path / "task.pid"
    service = Service(
        name="worker",
        command=[sys.executable, "-c", code, str(marker)],
        pid_file=tmp_path / "run" / "worker.pid",
        log_file=tmp_path / "logs" / "worker.log",
        match="time.sleep(60)",
        stop_descendants=True,
    )
    pid = start(service)
    try:
        assert wait_until(lambda: marker.exists() and marker.read_text().isdigit(), 10, interval_s=0.05)
        task = int(marker.read_text())
        assert wait_until(lambda: os.getpgid(task) == task, 10, interval_s=0.05), "the task has its own group"
        assert stop(service) == "worker: stopped"
        assert not group_alive(pid) and not group_alive(task), "the task outlived its worker"
    finally:
        for group in (pid, int(marker.read_text()) if marker.exists() else pid):
            if group_alive(group):
                os.killpg(group, 9)
