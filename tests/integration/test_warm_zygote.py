"""The warm zygote (runtime/pool/warm_zygote.py): a fork server started before the host's
imports, taken by the first pool it can serve. Each test runs a fresh host process, since
a process prestarts at most one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from runtime.testing.leaks import pid_alive, pit_processes

ROOT = Path(__file__).resolve().parents[2]


ADAPTER = """
    import os
    import sys
    import time
    import runtime
    from runtime import Adapter, tool
    from runtime.pool import warm_zygote
    from runtime.worker import telemetry

    runtime.Pool  # an adapter touching the host API must not start fork servers of its own

    class Probe(Adapter):
        @tool
        def env(self, name: str) -> dict:
            return {"value": os.environ.get(name), "file": __file__,
                    "own_warm": warm_zygote.pending_pid(), "cwd": os.getcwd(),
                    "telemetry_buffer": telemetry.buffer.size, "path": sys.path,
                    "utc_offset": time.strftime("%z"), "tzname": list(time.tzname)}
"""


def host(script: str, tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    """A host process running ``script`` (its last stdout line is JSON)."""
    (tmp_path / "host.py").write_text(textwrap.dedent(script))
    return subprocess.Popen(
        [sys.executable, "host.py"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PIT_STATE_DIR": str(tmp_path / "state"),
             **env})


def result(proc: subprocess.Popen[str]) -> dict:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def gone(pid: int, within: float = 10.0) -> bool:
    end = time.monotonic() + within
    while pid_alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    return not pid_alive(pid)


USE_WARM = """
    import json, psutil, runtime
    from runtime.pool import warm_zygote
    Pool = runtime.Pool  # prestarts the fork server
    warm = warm_zygote.pending_pid()
    with Pool(size=2) as pool:
        pids = {pool.execute("ping")["pid"] for _ in range(20)}
        zygote = pool.stats().forkserver_pid
        cmd = psutil.Process(zygote).cmdline()
        parents = {psutil.Process(p).ppid() for p in pool.pids()}
        print(json.dumps({"warm": warm, "zygote": zygote, "cmd": cmd, "parents": sorted(parents),
                          "run_id": pool.instance.id, "token": pool.instance.token,
                          "workers": sorted(pool.pids()), "left": warm_zygote.pending_pid()}))
"""


def test_the_first_pool_forks_its_workers_from_the_warm_zygote(tmp_path: Path) -> None:
    out = result(host(USE_WARM, tmp_path))
    assert out["warm"] is not None and out["zygote"] == out["warm"]
    assert out["parents"] == [out["warm"]]  # every worker forked by it
    assert out["left"] is None  # taken
    # its command line proves it is this instance's (what pit cleanup checks)
    cmd = out["cmd"]
    assert cmd[cmd.index("--run-id") + 1] == out["run_id"]
    assert cmd[cmd.index("--instance-token") + 1] == out["token"]
    assert gone(out["warm"]) and not any(pid_alive(p) for p in out["workers"])


def test_a_pool_executor_forks_from_the_warm_zygote(tmp_path: Path) -> None:
    script = """
        import json, os, runtime
        from runtime.pool import warm_zygote

        def parent(_):
            return os.getppid()

        if __name__ == "__main__":
            PoolExecutor = runtime.PoolExecutor
            warm = warm_zygote.pending_pid()
            with PoolExecutor(2) as ex:
                print(json.dumps({"warm": warm, "parent": ex.submit(parent, 1).result()}))
    """
    out = result(host(script, tmp_path))
    assert out["warm"] is not None and out["parent"] == out["warm"]


def test_prestart_can_be_turned_off(tmp_path: Path) -> None:
    out = result(host(USE_WARM, tmp_path, PIT_PRESTART="0"))
    assert out["warm"] is None and out["zygote"] is not None


def test_a_pool_it_cannot_serve_starts_its_own_and_the_warm_one_exits(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(textwrap.dedent(ADAPTER))
    script = """
        import json, runtime
        from runtime.pool import warm_zygote
        Pool = runtime.Pool
        warm = warm_zygote.pending_pid()
        # PYTHONHASHSEED is read as an interpreter starts: the warm zygote started without it
        with Pool(adapter="probe:Probe", size=1, env={"PYTHONHASHSEED": "7"}) as pool:
            zygote = pool.stats().forkserver_pid
            got = pool.execute("env", {"name": "PYTHONHASHSEED"})
            print(json.dumps({"warm": warm, "zygote": zygote, "seed": got["value"],
                              "own_warm": got["own_warm"],
                              "left": warm_zygote.pending_pid()}), flush=True)
    """
    out = result(host(script, tmp_path))
    assert out["warm"] is not None and out["zygote"] not in (None, out["warm"])
    assert out["seed"] == "7" and out["own_warm"] is None
    assert out["left"] == out["warm"]  # still waiting while the pool ran ...
    assert gone(out["warm"])  # ... and gone with the instance


def test_pit_run_gives_its_warm_zygote_the_pool_env_and_the_script_dir(tmp_path: Path) -> None:
    """`pit run code/main.py`: the adapter lives beside the script, not in the current
    directory the warm zygote started in; the pool's env reaches the forked worker."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "probe.py").write_text(textwrap.dedent(ADAPTER))
    (tmp_path / "pit.toml").write_text(textwrap.dedent("""
        [pools.default]
        adapter = "probe:Probe"
        size = 1
        env = { PIT_TEST_WARM_VAR = "yes" }
    """))
    (code / "main.py").write_text(textwrap.dedent("""
        import json, psutil, runtime
        pool = runtime.current_pools().default()
        out = runtime.execute("env", {"name": "PIT_TEST_WARM_VAR"})
        out["zygote_cmd"] = psutil.Process(pool.stats().forkserver_pid).cmdline()
        print(json.dumps(out))
    """))
    run = subprocess.run(
        [sys.executable, "-m", "snakecli", "run", "code/main.py"], cwd=tmp_path,
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PIT_STATE_DIR": str(tmp_path / "state")})
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert "--warm" in out["zygote_cmd"]
    assert out["value"] == "yes" and out["file"] == str(code / "probe.py")
    assert out["own_warm"] is None


def test_a_host_that_changed_directory_gets_workers_there(tmp_path: Path) -> None:
    """The warm zygote started in the host's first directory; the pool is made in another,
    where its adapter lives: the workers run there, as from a zygote started then."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "probe.py").write_text(textwrap.dedent(ADAPTER))
    script = f"""
        import json, os, runtime
        from runtime.pool import warm_zygote
        Pool = runtime.Pool
        warm = warm_zygote.pending_pid()
        os.chdir({str(elsewhere)!r})
        with Pool(adapter="probe:Probe", size=1) as pool:
            got = pool.execute("env", {{"name": "HOME"}})
            print(json.dumps({{"warm": warm, "zygote": pool.stats().forkserver_pid, **got}}))
    """
    out = result(host(script, tmp_path))
    assert out["zygote"] == out["warm"] is not None
    assert out["cwd"] == str(elsewhere) and out["file"] == str(elsewhere / "probe.py")


def env_seen_from_the_warm_zygote(tmp_path: Path, name: str, value: str,
                                  **host_env: str) -> dict:
    """What the probe's ``env`` tool reports of ``name`` in a pool whose env sets it to
    ``value``, with the pool's zygote ("zygote") and the host's warm one ("warm")."""
    (tmp_path / "probe.py").write_text(textwrap.dedent(ADAPTER))
    script = f"""
        import json, runtime
        from runtime.pool import warm_zygote
        Pool = runtime.Pool
        warm = warm_zygote.pending_pid()
        with Pool(adapter="probe:Probe", size=1, env={{{name!r}: {value!r}}}) as pool:
            got = pool.execute("env", {{"name": {name!r}}})
            print(json.dumps({{"warm": warm, "zygote": pool.stats().forkserver_pid, **got}}))
    """
    return result(host(script, tmp_path, **host_env))


def test_settings_the_worker_modules_read_come_from_the_pool_env(tmp_path: Path) -> None:
    """The warm zygote imported the worker's modules with the host's environment; what they
    read from it must still be the pool's (PIT_TELEMETRY_BUFFER sizes a worker's telemetry
    buffer), as from a zygote started with the pool."""
    out = env_seen_from_the_warm_zygote(tmp_path, "PIT_TELEMETRY_BUFFER", "4")
    assert out["zygote"] == out["warm"] is not None
    assert out["value"] == "4" and out["telemetry_buffer"] == 4


def test_a_pool_with_its_own_time_zone_gets_it_from_the_warm_zygote(tmp_path: Path) -> None:
    """TZ is read once, as the time module starts (the warm zygote's start, with the host's
    environment): a pool's env = { TZ = ... } must still be its workers' local time."""
    out = env_seen_from_the_warm_zygote(tmp_path, "TZ", "UTC0", TZ="JST-9")
    assert out["zygote"] == out["warm"] is not None and out["value"] == "UTC0"
    assert out["utc_offset"] == "+0000" and out["tzname"][0] == "UTC"


def test_a_pool_whose_pythonpath_drops_the_hosts_entries_gets_none_of_them(
        tmp_path: Path) -> None:
    """The warm zygote started with the host's PYTHONPATH; a pool whose env sets another
    (pit.toml's ``env = { PYTHONPATH = ... }``) must not find the host's entries on its
    workers' sys.path, as it would not from a zygote started with the pool's environment."""
    (tmp_path / "probe.py").write_text(textwrap.dedent(ADAPTER))
    hosts = tmp_path / "hosts_only"
    hosts.mkdir()
    script = f"""
        import json, runtime
        from runtime.pool import warm_zygote
        Pool = runtime.Pool
        warm = warm_zygote.pending_pid()
        with Pool(adapter="probe:Probe", size=1, env={{"PYTHONPATH": {str(ROOT)!r}}}) as pool:
            got = pool.execute("env", {{"name": "PYTHONPATH"}})
            print(json.dumps({{"warm": warm, **got}}))
    """
    out = result(host(script, tmp_path, PYTHONPATH=os.pathsep.join([str(ROOT), str(hosts)])))
    assert out["warm"] is not None and str(ROOT) in out["value"]
    assert str(hosts) not in out["path"]


def test_an_untaken_warm_zygote_exits_on_its_own_though_the_host_forked(tmp_path: Path) -> None:
    """A forked child of the host holds a copy of the warm zygote's socket: closing the host's
    copy alone is no end of file, and the zygote was waited for, then SIGKILLed."""
    script = """
        import json, os, signal, time, runtime
        from runtime.pool import warm_zygote
        Pool = runtime.Pool
        warm = warm_zygote._warm  # its Popen, to read how it ended
        child = os.fork()
        if child == 0:
            time.sleep(60)
            os._exit(0)
        try:
            with Pool(size=1, env={"PYTHONHASHSEED": "7"}) as pool:  # it cannot serve this
                pool.execute("ping")
        finally:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        print(json.dumps({"code": warm.popen.returncode}))
    """
    assert result(host(script, tmp_path))["code"] == 0  # not -9


def test_a_warm_zygote_no_pool_takes_exits_and_a_later_pool_starts_its_own(
        tmp_path: Path) -> None:
    script = """
        import json, time
        from runtime.pool import warm_zygote
        warm_zygote.WARM_IDLE_S = 1.0
        warm_zygote.prestart()  # what runtime.Pool does first; its pid is read at once: the
        warm = warm_zygote.pending_pid()  # rest of that import can outlast the idle time
        import runtime
        Pool = runtime.Pool
        deadline = time.monotonic() + 10
        while warm_zygote.pending_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        with Pool(size=1) as pool:
            pool.execute("ping")
            print(json.dumps({"warm": warm, "left": warm_zygote.pending_pid(),
                              "zygote": pool.stats().forkserver_pid}))
    """
    out = result(host(script, tmp_path))
    assert out["warm"] is not None and out["left"] is None
    assert out["zygote"] not in (None, out["warm"]) and gone(out["warm"])


def test_multiprocessing_children_of_a_host_start_no_warm_zygote(tmp_path: Path) -> None:
    """A spawn or forkserver child imports the host's main module again (as __mp_main__): a
    module-level `from runtime import Pool` must not start a fork server in each of them (an
    interpreter importing grpc per child, kept for a minute or the child's life)."""
    script = """
        import json, multiprocessing, psutil
        from runtime import Pool  # noqa: F401 - prestarts, in the host only
        from runtime.pool import warm_zygote

        def probe(_):
            return {"warm": warm_zygote.pending_pid(),
                    "children": [p.pid for p in psutil.Process().children()]}

        if __name__ == "__main__":
            out = {"host": warm_zygote.pending_pid()}
            for method in ("spawn", "forkserver"):
                with multiprocessing.get_context(method).Pool(1) as pool:
                    out[method] = pool.map(probe, [0])[0]
            print(json.dumps(out))
    """
    out = result(host(script, tmp_path))
    assert out["host"] is not None
    for method in ("spawn", "forkserver"):
        assert out[method]["warm"] in (None, out["host"]), method
        assert out[method]["children"] == [], method


def test_a_warm_zygote_dies_with_its_host(tmp_path: Path) -> None:
    proc = host("""
        import json, sys, time, runtime
        from runtime.pool import warm_zygote
        runtime.Pool
        print(json.dumps({"warm": warm_zygote.pending_pid()}), flush=True)
        time.sleep(60)
    """, tmp_path)
    try:
        assert proc.stdout is not None
        warm = json.loads(proc.stdout.readline())["warm"]
        assert warm is not None and psutil.Process(warm).ppid() == proc.pid
        # no pool took it: it is no test's worker (pytest's leak checks match --host-pid)
        assert warm not in [p.pid for p in pit_processes(host_pid=proc.pid)]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert gone(warm)
