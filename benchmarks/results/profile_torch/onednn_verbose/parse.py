"""Sums oneDNN verbose exec times between MARK_START and MARK_END, per (kind, shape)."""
import collections, re, sys
steps = int(sys.argv[2])
on = False
tot = collections.Counter(); cnt = collections.Counter(); impls = {}
for line in open(sys.argv[1]):
  if line.startswith("MARK_START"): on = True; continue
  if line.startswith("MARK_END"): break
  if not on or ",exec," not in line: continue
  f = line.strip().split(",")
  i = f.index("exec")
  prim, impl, prop = f[i+2], f[i+3], f[i+4]
  shape = next((x for x in f if x.startswith("mb") or re.match(r"^\d+x", x)), "?")
  key = (prim, prop, shape)
  tot[key] += float(f[-1]); cnt[key] += 1; impls[key] = impl
for key in sorted(tot, key=lambda k: (k[0], k[1], k[2])):
  print(f"{tot[key]/steps:8.3f} ms {cnt[key]//steps:3d}x {key[0]:12s} {key[1]:16s} {impls[key]:45s} {key[2]}")
by = collections.Counter()
for k, v in tot.items(): by[(k[0], k[1])] += v / steps
for k, v in by.most_common(): print(f"TOTAL {v:8.2f} ms {k}")
