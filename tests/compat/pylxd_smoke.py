"""pylxd against hutchd: the calls automation makes. Usage: pylxd_smoke.py SOCKET IMAGE_ALIAS NETWORK"""
import sys
import time

import pylxd

socket, alias, net = sys.argv[1], sys.argv[2], sys.argv[3]
c = pylxd.Client(endpoint=socket)
assert c.trusted, "the unix socket must be trusted"

# A managed network (no NAT, so the host's forwarding is left alone).
c.networks.create(net, type="bridge", config={"ipv4.address": "auto", "ipv4.nat": "false"})
n = c.networks.get(net)
assert n.managed and n.type == "bridge", n
assert net in [x.name for x in c.networks.all()]
assert n.state().addresses[0]["family"] == "inet"
assert "default" in [p.name for p in c.storage_pools.all()]

inst = c.instances.create(
    {
        "name": "py1",
        "source": {"type": "image", "alias": alias},
        "devices": {"eth0": {"type": "nic", "network": net, "name": "eth0"}},
    },
    wait=True,
)
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

# The address DHCP gave it, as automation reads it.
subnet = n.config["ipv4.address"].rsplit(".", 1)[0] + "."
deadline = time.time() + 20
while True:
    eth0 = (inst.state().network or {}).get("eth0", {})
    v4 = [a["address"] for a in eth0.get("addresses", []) if a["family"] == "inet"]
    if v4:
        break
    assert time.time() < deadline, "no IPv4 address on eth0"
    time.sleep(0.2)
assert v4[0].startswith(subnet), (v4, subnet)
assert "/1.0/instances/py1" in c.networks.get(net).used_by

assert any(i.fingerprint for i in c.images.all())
assert "default" in [p.name for p in c.profiles.all()]
inst.stop(wait=True, force=True)
# publish: a stopped instance becomes an image that pylxd reads back.
published = inst.publish(wait=True)
assert published.fingerprint and published.architecture, published
published.delete(wait=True)
inst.delete(wait=True)
assert c.instances.all() == []
n.delete()
assert net not in [x.name for x in c.networks.all()]
print("pylxd ok")
