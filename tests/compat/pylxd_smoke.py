"""pylxd against hutchd: the calls automation makes. Usage: pylxd_smoke.py SOCKET IMAGE_ALIAS"""
import sys

import pylxd

socket, alias = sys.argv[1], sys.argv[2]
c = pylxd.Client(endpoint=socket)
assert c.trusted, "the unix socket must be trusted"
inst = c.instances.create({"name": "py1", "source": {"type": "image", "alias": alias}}, wait=True)
inst.start(wait=True)
inst.sync()
assert inst.status == "Running", inst.status
r = inst.execute(["sh", "-c", "echo out; echo err >&2; exit 3"])
assert (r.exit_code, r.stdout, r.stderr) == (3, "out\n", "err\n"), r
inst.files.put("/root/hello.txt", b"hi there", mode="0640", uid=7, gid=8)
assert inst.files.get("/root/hello.txt") == b"hi there"
assert inst.execute(["stat", "-c", "%u %g %a", "/root/hello.txt"]).stdout.strip() == "7 8 640"
inst.config["limits.memory"] = "64MiB"
inst.save(wait=True)
assert c.instances.get("py1").config["limits.memory"] == "64MiB"
assert inst.state().memory["usage"] > 0
assert any(i.fingerprint for i in c.images.all())
assert "default" in [p.name for p in c.profiles.all()]
inst.stop(wait=True, force=True)
inst.delete(wait=True)
assert c.instances.all() == []
print("pylxd ok")
