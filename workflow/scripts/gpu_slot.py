"""Give a pipeline job the GPUs it asked for and no others: one process per GPU.

Used as a launcher in front of a job's command (the train rule),

    python workflow/scripts/gpu_slot.py --gpus {resources.gpu} --threads {threads} --compilation-cache DIR -- python -m itlin train ...

or from a ``script:`` rule, before JAX is imported: ``from gpu_slot import claim_gpus;
claim_gpus(snakemake.resources.gpu, threads=snakemake.threads)`` (Snakemake puts the script's folder on ``sys.path``).
Both ways, the job also gets JAX's persistent compilation cache (``--compilation-cache``, ``use_compilation_cache``).

* A job that asks for no GPU gets ``CUDA_VISIBLE_DEVICES=""``: it runs on the CPU and leaves
  the GPUs to the GPU jobs (JAX would otherwise reserve 75% of every visible GPU's memory).
* In a SLURM job (``SLURM_JOB_ID`` set) SLURM has already set ``CUDA_VISIBLE_DEVICES`` to the
  job's own GPUs: it is left as it is.
* Locally, ``--resources gpu=N`` caps how many GPU jobs run at once, but Snakemake does not
  say which device a job may use. Each job therefore takes an exclusive ``flock`` on a free
  slot file per device under ``results/gpu_locks/`` and sees only that device. The lock lives
  on an open file descriptor that the job's process inherits, so it is released when the
  process ends, however it ends (no stale locks after a crash or ``kill -9``).
* The devices are those in the ``CUDA_VISIBLE_DEVICES`` of the Snakemake process, else every
  GPU that ``nvidia-smi`` lists. ``ITLIN_JOBS_PER_GPU=M`` (default 1) gives each device M slots
  for models too small to fill a GPU; jobs then share a device, so each gets
  ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` and allocates only what it uses.
* A CPU job of one thread (``--threads 1``, the config's ``resources.threads``) keeps XLA:CPU's
  matmuls on one thread (``--xla_cpu_multi_thread_eigen=false``): Snakemake runs a job per core, and
  jobs that each spread over every core slow each other (two MNIST-1D CNN jobs on two cores: 3.2 ms
  per step each against 4.0 ms, jax 0.10.2).
* A CPU job also gets cores of its own: it locks ``threads`` free slot files ``cpu<N>.lock`` (N among
  the launching process's CPUs; in ``CORE_LOCK_DIR``, one folder for every pipeline on the machine) and
  runs on those cores alone (``os.sched_setaffinity``). XLA:CPU's
  runtime otherwise spreads a job's work over every core: an MNIST-1D deep CNN training job (3 lanes)
  took 27.3 s at 131% CPU alone and 32 s beside another job, against 23.2 s on one core of its own
  (jax 0.10.2, 2 cores). When fewer cores are free than asked (more jobs than cores), it shares the
  first ones: a job always sees exactly ``threads`` cores, because XLA:CPU partitions its work by the
  cores it sees and the numbers differ with them (the same MNIST-1D job on 1 core and on 2 differs by
  float rounding, which training grows to 0.97 in one lane's loss). In a SLURM job, SLURM confines it.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_LOCK_DIR = Path("results") / "gpu_locks"
CORE_LOCK_DIR = Path(tempfile.gettempdir()) / f"itlin-core-locks-{os.getuid()}"
"""The cores' slot files: one folder for the machine (cores are shared by every pipeline running on it)."""
POLL_SECONDS = 1.0


class NoGpuError(RuntimeError):
    """A job asks for GPUs on a machine where none is visible."""


def device_pool(environ: dict[str, str]) -> list[str]:
    """The devices jobs may use: the launching environment's CUDA_VISIBLE_DEVICES, else nvidia-smi's list."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [device.strip() for device in visible.split(",") if device.strip()]
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [line.strip() for line in listed.splitlines() if line.strip()]


def jobs_per_gpu(environ: dict[str, str]) -> int:
    """Slots per device, from ITLIN_JOBS_PER_GPU (default 1); an invalid value is an error naming it."""
    raw = environ.get("ITLIN_JOBS_PER_GPU", "1")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"ITLIN_JOBS_PER_GPU must be a positive integer, got {raw!r}")
    return int(raw)


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive lock on ``path``, or None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def _lock_free_devices(pool: list[str], count: int, slots: int, lock_dir: Path) -> tuple[list[str], list[int]]:
    """Lock one free slot on each of ``count`` distinct devices; all or nothing."""
    devices, descriptors = [], []
    for device in pool:
        name = re.sub(r"[^\w.-]", "_", device)  # a UUID or MIG name as a file name
        for slot in range(slots):
            descriptor = _try_lock(lock_dir / f"gpu{name}.slot{slot}.lock")
            if descriptor is not None:
                devices.append(device)
                descriptors.append(descriptor)
                break
        if len(devices) == count:
            return devices, descriptors
    for descriptor in descriptors:
        os.close(descriptor)
    return [], []


SINGLE_THREAD_FLAG = "--xla_cpu_multi_thread_eigen=false"


def claim_cores(threads: int, lock_dir: Path = CORE_LOCK_DIR) -> list[int]:
    """Run this process (and what it starts or execs) on ``threads`` cores: free ones of its own, each held by a
    lock on its slot file, else (fewer free) the first ``threads`` shared. Always that many, since XLA:CPU's
    numbers depend on how many cores it sees. Returns the lock descriptors, inheritable: keep them open."""
    pool = sorted(os.sched_getaffinity(0))
    cores, descriptors = [], []
    for core in pool:
        descriptor = _try_lock(Path(lock_dir) / f"cpu{core}.lock")
        if descriptor is not None:
            cores.append(core)
            descriptors.append(descriptor)
        if len(cores) == threads:
            break
    if len(cores) < threads:
        for descriptor in descriptors:
            os.close(descriptor)
        cores, descriptors = pool[:threads], []
        print(f"gpu_slot: fewer than {threads} free core(s); the job shares cores {cores}", file=sys.stderr)
    for descriptor in descriptors:
        os.set_inheritable(descriptor, True)
    os.sched_setaffinity(0, cores)
    return descriptors


def claim_gpus(gpus: int, lock_dir: Path = DEFAULT_LOCK_DIR, environ: dict[str, str] | None = None, *,
               threads: int | None = None, core_lock_dir: Path = CORE_LOCK_DIR) -> list[int]:
    """Set CUDA_VISIBLE_DEVICES (and XLA_PYTHON_CLIENT_PREALLOCATE) in ``environ`` for a job of ``gpus``
    GPUs, waiting for free devices if need be; a CPU job gets ``threads`` cores of its own (``claim_cores``;
    outside SLURM), and of 1 thread XLA_FLAGS for one thread. Returns the lock descriptors: keep them open
    (they are inheritable, so a command exec'd next holds them) until the job ends."""
    environ = os.environ if environ is None else environ
    if gpus == 0:
        environ["CUDA_VISIBLE_DEVICES"] = ""
        if threads == 1 and SINGLE_THREAD_FLAG not in environ.get("XLA_FLAGS", ""):
            environ["XLA_FLAGS"] = f"{environ.get('XLA_FLAGS', '')} {SINGLE_THREAD_FLAG}".strip()
        return claim_cores(threads, core_lock_dir) if threads and "SLURM_JOB_ID" not in environ else []
    if "SLURM_JOB_ID" in environ:
        return []  # SLURM set CUDA_VISIBLE_DEVICES to this job's allocation
    pool, slots = device_pool(environ), jobs_per_gpu(environ)
    if len(pool) < gpus:
        raise NoGpuError(f"the job asks for {gpus} GPU(s) but {len(pool)} are visible "
                         f"(CUDA_VISIBLE_DEVICES={environ.get('CUDA_VISIBLE_DEVICES')!r}, else nvidia-smi); "
                         "set resources.gpu: 0 in the config to train on the CPU")
    waiting = False
    while True:
        devices, descriptors = _lock_free_devices(pool, gpus, slots, Path(lock_dir))
        if devices:
            break
        if not waiting:
            print(f"gpu_slot: all {len(pool) * slots} GPU slots are taken (devices {','.join(pool)}, "
                  f"ITLIN_JOBS_PER_GPU={slots}); waiting: is --resources gpu larger than that?", file=sys.stderr)
            waiting = True
        time.sleep(POLL_SECONDS)
    for descriptor in descriptors:
        os.set_inheritable(descriptor, True)
    environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    if slots > 1:
        environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # the device is shared: take only what is used
    return descriptors


def use_compilation_cache(directory: str, environ: dict[str, str] | None = None) -> None:
    """Let the job read and write JAX's persistent compilation cache in ``directory``, every program in it
    however fast it compiled: the jobs of a model compile the same programs (K and the seeds are traced),
    and below JAX's default threshold (1 s) a small model's programs would each be compiled again by every
    job (a digits MLP training job: 6.2 s without them, 3.5 s with). A cache and threshold already set in
    the environment (``JAX_COMPILATION_CACHE_DIR``, e.g. one cache for several checkouts) are kept."""
    environ = os.environ if environ is None else environ
    environ.setdefault("JAX_COMPILATION_CACHE_DIR", directory)
    environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def main(argv: list[str] | None = None) -> None:
    """Claim the job's GPUs, then replace this process with the job's command (which keeps the locks)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, required=True, help="GPUs the job asked for (its resources.gpu)")
    parser.add_argument("--threads", type=int, help="CPU threads the job asked for (its threads)")
    parser.add_argument("--compilation-cache", help="JAX's persistent compilation cache (use_compilation_cache)")
    parser.add_argument("--locks", type=Path, default=DEFAULT_LOCK_DIR, help="folder of the per-device lock files")
    parser.add_argument("--core-locks", type=Path, default=CORE_LOCK_DIR, help="folder of the per-core lock files")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the job's command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    if args.compilation_cache:
        use_compilation_cache(args.compilation_cache)
    try:
        claim_gpus(args.gpus, args.locks, threads=args.threads, core_lock_dir=args.core_locks)
    except (NoGpuError, ValueError) as error:
        sys.exit(f"gpu_slot: {error}")
    source = " (SLURM's allocation)" if args.gpus and "SLURM_JOB_ID" in os.environ else ""
    print(f"gpu_slot: {args.gpus} GPU(s) asked; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}"
          f"{source}, XLA_PYTHON_CLIENT_PREALLOCATE={os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE')!r}, "
          f"cores {sorted(os.sched_getaffinity(0))}", file=sys.stderr, flush=True)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
