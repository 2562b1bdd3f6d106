"""Run with `pit run examples/quickstart.py`: real calls to the built-in showcase adapter."""

import runtime

pool = runtime.current_pools().default()
pool.register_host_tool("greet", lambda who: f"hello {who}, from the host")

print("add:", runtime.execute("add", {"a": 2, "b": 40}))
print("echo:", runtime.execute("echo", {"msg": "hello", "nums": [1, 2, 3]}))
print("stream:", [c["i"] for c in runtime.stream("stream_count", {"n": 5})])
print("bytes:", runtime.execute("bytes_echo", {"data": b"\x00\xffraw"}))
print("host tool:", runtime.execute("call_host", {"name": "greet", "who": "worker"}))
pids = sorted({runtime.execute("ping")["pid"] for _ in range(8)})
print(f"workers answering: {len(pids)} ({', '.join(map(str, pids))})")
try:
    runtime.execute("fail", {"message": "on purpose"})
except runtime.RemoteError as exc:
    print(f"remote error: {exc.remote_type}: {exc}")
