"""Flattens an image exported by `skopeo copy ... dir:DIR` into a listing, independently of kiln's code.

Layers are applied in manifest order with the OCI whiteout rules (.wh.NAME deletes NAME, .wh..wh..opq
empties the directory of lower layers). Prints JSON: {path: [type, mode, uid, gid, size, linkname, sha256]}.
"""
import hashlib, json, sys, tarfile, os

def clean(n):
    while n.startswith("./") or n.startswith("/"):
        n = n[2:] if n.startswith("./") else n[1:]
    return "" if n == "." else n.rstrip("/")

d = sys.argv[1]
manifest = json.load(open(os.path.join(d, "manifest.json")))
tree = {}
for layer in manifest["layers"]:
    blob = os.path.join(d, layer["digest"].split(":", 1)[1])
    added = {}
    with tarfile.open(blob, "r:*") as tf:
        for m in tf:
            name = clean(m.name)
            if name == "":
                continue
            base = os.path.basename(name)
            parent = os.path.dirname(name)
            if base == ".wh..wh..opq":
                for p in [p for p in tree if p.startswith(parent + "/") and p not in added]:
                    del tree[p]
                continue
            if base.startswith(".wh."):
                target = os.path.join(parent, base[4:])
                for p in [p for p in tree if p == target or p.startswith(target + "/")]:
                    del tree[p]
                continue
            kind = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
                    tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}[m.type]
            digest = hashlib.sha256(tf.extractfile(m).read()).hexdigest() if m.isfile() else ""
            linkname = clean(m.linkname) if m.islnk() else m.linkname
            if name in tree and tree[name][0] == "dir" and kind != "dir":
                for p in [p for p in tree if p.startswith(name + "/")]:
                    del tree[p]
            tree[name] = [kind, oct(m.mode), m.uid, m.gid, m.size, linkname, digest]
            added[name] = True
print(json.dumps(tree, sort_keys=True))
