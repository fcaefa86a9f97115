"""torch.load / torch.save timings and resident memory for `cargo xtask bench io` (prints one JSON line)."""
import sys, time, json, os, torch, resource
def rss(field):
    for l in open('/proc/self/status'):
        if l.startswith(field): return int(l.split()[1]) * 1024
torch.set_num_threads(2)
f = sys.argv[1]
base = rss('VmRSS:')
t = time.perf_counter(); sd = torch.load(f); s = sum(float(v.double().sum()) for v in sd.values()); first = time.perf_counter() - t
peak = rss('VmHWM:') - base
loads = []
for _ in range(4):
    t = time.perf_counter(); x = torch.load(f); loads.append(time.perf_counter() - t); del x
mm = []
for _ in range(3):
    t = time.perf_counter(); x = torch.load(f, mmap=True); [float(v.double().sum()) for v in x.values()]; mm.append(time.perf_counter() - t); del x
import io
saves = []
for _ in range(3):
    t = time.perf_counter(); torch.save(sd, '/tmp/torch-bench.pth'); saves.append(time.perf_counter() - t)
os.remove('/tmp/torch-bench.pth')
med = lambda v: sorted(v)[len(v)//2]
print(json.dumps({"load_s": med([first] + loads), "peak_rss_above_baseline_bytes": peak, "mmap_touch_s": med(mm), "save_s": med(saves)}))
