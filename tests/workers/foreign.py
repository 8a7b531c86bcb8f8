#!/usr/bin/env python3
"""A foreign worker for tests: speaks the protocol on fds 3/4 with the
package's own codec (python/multiloop/_protocol.py, loaded by path, so
nothing needs installing), and answers each task by what it asks for:
{"reply": "newline"} a result with a raw line break, {"reply": "garbage"}
bytes that are not JSON, anything else {"fine": true}."""

import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "protocol", os.path.join(HERE, "..", "..", "python", "multiloop", "_protocol.py")
)
protocol = importlib.util.module_from_spec(spec)
sys.modules["protocol"] = protocol
spec.loader.exec_module(protocol)

REPLIES = {"newline": b'{"a":\n1}', "garbage": b"<html>not json</html>"}


def main():
    if sys.argv[1:2] == ["--list-kinds"]:
        print("sim")
        return
    out = protocol.RESULT_FD
    os.write(out, protocol.encode_hello(protocol.Hello(pid=os.getpid(), kinds=["sim"], runtime="foreign")))
    reader = protocol.FrameReader()
    while True:
        data = os.read(protocol.TASK_FD, 1 << 16)
        if not data:
            break
        results = []
        for payload in reader.feed(data):
            for task_id, line in protocol.decode_tasks(payload):
                reply = json.loads(line).get("reply")
                results.append(protocol.TaskResult(id=task_id, micros=1, ok=REPLIES.get(reply, b'{"fine":true}')))
        if results:
            os.write(out, protocol.encode_results(results))
    os.write(out, protocol.encode_bye(protocol.Usage()))


if __name__ == "__main__":
    main()
