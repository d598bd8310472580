#!/usr/bin/env python3
"""Load test of the HTTP API (`just load-api`): against a `koalabooth serve` on
127.0.0.1 (throw-away data directory, the tiny random model) while a DreamBooth training
of another subject runs in the same data directory, send READS concurrent API reads and
UPLOADS concurrent subject uploads (3 photos each) at once, then check: no error
response, every upload stored whole (its photos on disk and in the database), and
`koalabooth doctor` clean. Prints the read latency percentiles. Standard library only;
127.0.0.1 only; bounded in requests and time; stops the server and the training itself.

Usage: load.py BIN [READS] [UPLOADS]
"""
import concurrent.futures, glob, json, os, re, shutil, signal, subprocess, sys, tempfile, time, urllib.request, uuid

bin_, reads, uploads = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200, int(sys.argv[3]) if len(sys.argv) > 3 else 20
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
photos = sorted(glob.glob(os.path.join(root, "subjects/robot-toy/*.jpg")))[:3]
work = tempfile.mkdtemp(prefix="kb-load-")
home, model = os.path.join(work, "home"), os.path.join(work, "tiny")
procs = []


def run(*args):
    return subprocess.run([bin_, *args], check=True, capture_output=True, text=True).stdout


def request(method, url, key, body=None, content_type=None):
    r = urllib.request.Request(url, data=body, method=method, headers={"Authorization": f"Bearer {key}"})
    if content_type:
        r.add_header("Content-Type", content_type)
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(r, timeout=120) as resp:
            data, status = resp.read(), resp.status
    except urllib.error.HTTPError as e:
        data, status = e.read(), e.code
    return status, data, time.perf_counter() - start


def form(name):
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in (("name", name), ("class", "toy"), ("token", "sks"))]
    for p in photos:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="photos"; filename="{os.path.basename(p)}"\r\nContent-Type: image/jpeg\r\n\r\n'
        parts.append(head.encode() + open(p, "rb").read() + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


try:
    run("model", "init", "--preset", "tiny", "--out", model, "--seed", "0")
    key = run("keys", "create", "load", "--home", home).strip()
    # The training: a CLI subject and a recipe long enough to outlast the load.
    run("subject", "create", "trainee", "--class", "toy", "--token", "sks", *photos, "--home", home)
    recipe = os.path.join(work, "long.toml")
    text = open(os.path.join(root, "recipes/tiny.toml")).read()
    open(recipe, "w").write(re.sub(r"(?m)^max_steps = .*$", "max_steps = 100000", text))
    # Niced, as the service runs its jobs.
    trainer = subprocess.Popen(["nice", "-n", "10", bin_, "train", "trainee", "--recipe", recipe, "--model", model, "--home", home],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs.append(trainer)
    while "step " not in (line := trainer.stdout.readline()):
        if not line and trainer.poll() is not None:
            sys.exit("the training did not start")
    server = subprocess.Popen([bin_, "serve", "--port", "0", "--home", home, "--model", f"tiny={model}"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs.append(server)
    url = re.search(r"http://127\.0\.0\.1:\d+", server.stdout.readline()).group(0)
    status, data, _ = request("POST", url + "/v1/subjects", key, *form("first"))
    assert status == 201, (status, data)
    first = json.loads(data)["subject"]["id"]

    paths = ["/v1/subjects", "/v1/models", f"/v1/subjects/{first}"]
    jobs = [("GET", url + paths[i % 3], None) for i in range(reads)] + [("POST", url + "/v1/subjects", f"load-{i}") for i in range(uploads)]
    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(lambda j: (j, request(j[0], j[1], key, *(form(j[2]) if j[2] else (None, None)))), jobs))
    wall = time.perf_counter() - began
    errors = [(j[0], j[1], s, d[:200]) for j, (s, d, _) in results if s != (201 if j[0] == "POST" else 200)]
    latencies = sorted(t for j, (s, d, t) in results if j[0] == "GET")
    pct = lambda p: latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"{reads} reads + {uploads} uploads at once in {wall:.2f} s while training (CPU: {cpu}, {os.cpu_count()} cores)")
    print(f"read latency ms: p50 {pct(50):.1f}  p90 {pct(90):.1f}  p99 {pct(99):.1f}  max {latencies[-1] * 1000:.1f}")
    upload_times = sorted(t for j, (s, d, t) in results if j[0] == "POST")
    print(f"upload latency ms: p50 {upload_times[len(upload_times) // 2] * 1000:.1f}  max {upload_times[-1] * 1000:.1f}")
    ok = not errors
    for e in errors[:10]:
        print("error:", e)
    # Every upload whole: three photos in the database and on disk.
    for i in range(uploads):
        shown = json.loads(run("subject", "show", f"load-{i}", "--json", "--home", home))
        files = [os.path.join(home, p["path"]) for p in shown["photos"]]
        if len(files) != 3 or not all(os.path.getsize(f) > 0 for f in files):
            print(f"load-{i}: {len(files)} photos recorded, files {[os.path.exists(f) for f in files]}")
            ok = False
    for p in reversed(procs):
        p.send_signal(signal.SIGINT)
        p.wait(timeout=120)
    procs.clear()
    doctor = subprocess.run([bin_, "doctor", "--home", home], capture_output=True, text=True)
    print("doctor:", "clean" if doctor.returncode == 0 else doctor.stdout + doctor.stderr)
    ok = ok and doctor.returncode == 0
    sys.exit(0 if ok else 1)
finally:
    for p in procs:
        p.kill()
    shutil.rmtree(work, ignore_errors=True)
