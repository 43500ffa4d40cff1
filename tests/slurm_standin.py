"""Stand-ins for SLURM's sbatch, srun, sacct, squeue and scancel, so that --launcher slurm runs without a cluster.

A test writes one executable per command into its tmp_path (``install(bin_dir, state_dir)``) and puts that
folder first on PATH. ``sbatch SCRIPT`` keeps a copy of the script, answers ``Submitted batch job N`` as
SLURM does and runs the script's tasks (one per index of ``#SBATCH --array=0-K%P``, or one) in a
background process, at most P at a time, with the variables SLURM sets (``SLURM_JOB_ID``,
``SLURM_ARRAY_JOB_ID``, ``SLURM_ARRAY_TASK_ID``, ...) and the batch output in its ``--output`` / ``--error``
files. ``srun`` runs its command with the task variables and its own ``--output`` / ``--error`` (``%A %a
%j %t`` filled in). ``sacct -o JobID,State,NodeList --parsable2 -j N`` answers from the task states
(PENDING, RUNNING, COMPLETED, FAILED, CANCELLED) in submitit's expected format; ``squeue -h -o %i|%T`` the
waiting and running ones; ``scancel N`` kills the running tasks and cancels the others; ``#SBATCH --begin``
holds the job until it is cancelled. No time limits. State lives in files under the state folder (STANDIN_SLURM_STATE).
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

STATE_VAR = "STANDIN_SLURM_STATE"
COMMANDS = ("sbatch", "srun", "sacct", "squeue", "scancel")


def install(bin_dir, state_dir):
    """Write the five executables into bin_dir; returns the environment additions (PATH, state folder)."""
    bin_dir, state_dir = Path(bin_dir), Path(state_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    here = str(Path(__file__).resolve().parent)
    for name in COMMANDS:
        exe = bin_dir / name
        exe.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {here!r})\nimport slurm_standin\n"
                       f"sys.exit(slurm_standin.main({name!r}, sys.argv[1:]))\n")
        exe.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", STATE_VAR: str(state_dir)}


def _state_dir():
    return Path(os.environ[STATE_VAR])


def _task_name(job, task):
    return str(job) if task is None else f"{job}_{task}"


def _set_state(job, task, state):
    path = _state_dir() / f"{_task_name(job, task)}.state"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state)
    os.replace(tmp, path)


def _fill(pattern, job, task, step_task=None):
    """SLURM's filename patterns: %A the array's job id, %a the task index, %j the job id, %t the task rank."""
    out = pattern.replace("%A", str(job)).replace("%a", "" if task is None else str(task))
    out = out.replace("%j", _task_name(job, task))
    return out.replace("%t", "0" if step_task is None else str(step_task))


def sbatch(argv):
    script = Path(argv[-1])
    text = script.read_text()
    counter = _state_dir() / "last_job_id"
    job = int(counter.read_text()) + 1 if counter.exists() else 4821
    counter.write_text(str(job))
    (_state_dir() / f"{job}.sbatch").write_text(text)
    array = re.search(r"^#SBATCH --array=0-(\d+)", text, re.M)
    tasks = list(range(int(array.group(1)) + 1)) if array else [None]
    for task in tasks:
        _set_state(job, task, "PENDING")
    with open(_state_dir() / f"{job}.runner.log", "w") as log:  # the stand-in's own errors, if any
        subprocess.Popen([sys.executable, __file__, "run", str(job), str(script), ",".join(map(str, tasks))],
                         start_new_session=True, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=os.getcwd())
    print(f"Submitted batch job {job}")
    return 0


def _run(job, script, tasks):
    """The background part of sbatch: the tasks of one submission, at most P at once (``--array=0-K%P``)."""
    job, text = int(job), Path(script).read_text()
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", text, re.M))
    at_once = int(flags["array"].split("%")[1]) if "%" in flags.get("array", "") else 1
    queue, running = [None if t == "None" else int(t) for t in tasks.split(",")], {}
    cancel = _state_dir() / f"{job}.cancel"
    while "begin" in flags and not cancel.exists():  # --begin: held until cancelled (no clock here)
        time.sleep(0.1)
    while queue or running:
        if cancel.exists():  # scancel: the running tasks are killed, the waiting ones never start
            for task, proc in running.items():
                os.killpg(proc.pid, 15)
                proc.wait()
                _set_state(job, task, "CANCELLED")
            running.clear()
        while queue and len(running) < at_once:
            task = queue.pop(0)
            if (_state_dir() / f"{job}.cancel").exists():
                _set_state(job, task, "CANCELLED")
                continue
            # every task of an array has a job id of its own on SLURM too
            env = dict(os.environ, SLURM_JOB_ID=str(job if task is None else job * 1000 + task),
                       SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0", SLURM_JOB_NODELIST="standin0",
                       SLURM_SUBMIT_DIR=os.getcwd())
            if task is not None:
                env.update(SLURM_ARRAY_JOB_ID=str(job), SLURM_ARRAY_TASK_ID=str(task))
            _set_state(job, task, "RUNNING")
            out = _fill(flags.get("output", os.devnull), job, task)
            err = _fill(flags.get("error", out), job, task)
            with open(out, "a") as o, open(err, "a") as e:
                running[task] = subprocess.Popen(["bash", script], env=env, stdout=o, stderr=e,
                                                 start_new_session=True)
        for task, proc in list(running.items()):
            if proc.poll() is not None:
                del running[task]
                _set_state(job, task, "COMPLETED" if proc.returncode == 0 else "FAILED")
        time.sleep(0.1)


def srun(argv):
    files, i = {}, 0
    while i < len(argv) and argv[i].startswith("--"):
        if argv[i] in ("--output", "--error"):
            files[argv[i][2:]] = argv[i + 1]
            i += 2
        else:
            i += 1
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ["SLURM_JOB_ID"]
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    env = dict(os.environ, SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NTASKS="1", SLURM_STEP_ID="0")
    out = _fill(files.get("output", os.devnull), job, task, 0)
    err = _fill(files.get("error", out), job, task, 0)
    with open(out, "a") as o, open(err, "a") as e:
        return subprocess.call(argv[i:], env=env, stdout=o, stderr=e)


def _states():
    return {p.stem: p.read_text() for p in sorted(_state_dir().glob("*.state"))}


def sacct(argv):
    wanted = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-j"}
    print("JobID|State|NodeList")
    for name, state in _states().items():
        if name.split("_")[0] in wanted:
            print(f"{name}|{state}|standin0")
    return 0


def squeue(argv):
    """``-o %i|%T``: one line per task, job id and state (``-h``: no header); the other options are ignored."""
    if "-h" not in argv:
        print("JOBID|STATE")
    for name, state in _states().items():
        if state in ("PENDING", "RUNNING"):
            print(f"{name}|{state}")
    return 0


def scancel(argv):
    for job in [a for a in argv if not a.startswith("-")]:
        (_state_dir() / f"{job.split('_')[0]}.cancel").touch()
    return 0


def main(name, argv):
    return {"sbatch": sbatch, "srun": srun, "sacct": sacct, "squeue": squeue, "scancel": scancel}[name](argv)


if __name__ == "__main__" and sys.argv[1] == "run":
    _run(*sys.argv[2:])
