"""Scale-out on tf.distribute: two MultiWorkerMirroredStrategy workers on localhost train one tiny epoch."""
import json
import os
import socket
import subprocess
import sys

import pytest


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from lunarseg.data.synth import write_dataset

    root = tmp_path_factory.mktemp("dist") / "data"
    write_dataset(root, 16, size=(96, 64), seed=5, workers=1, progress=False)
    return root


def test_two_workers_on_localhost_train_one_epoch_and_only_the_chief_writes(tiny_data, tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
               "TF_CPP_MIN_LOG_LEVEL": "3"}
        cmd = [sys.executable, "-m", "lunarseg", "train", "--data", str(tiny_data), "--out", str(tmp_path / f"w{index}"),
               "--size", "32", "--filters", "4", "--depth", "2", "--epochs", "1", "--batch-size", "4",
               "--strategy", "multi-worker"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, "\n".join(l for l in err.splitlines() if "Error" in l or "error" in l)[-3000:]
    assert (tmp_path / "w0/model.keras").exists() and (tmp_path / "w0/meta.json").exists()
    assert not (tmp_path / "w1/model.keras").exists()
    assert "worker 1 of 2 finished" in outs[1][0]


def test_multi_worker_resume_is_refused_up_front_in_one_line(tiny_data, tmp_path):
    cmd = [sys.executable, "-m", "lunarseg", "train", "--data", str(tiny_data), "--out", str(tmp_path / "w0"),
           "--size", "32", "--filters", "4", "--depth", "2", "--epochs", "1", "--strategy", "multi-worker", "--resume"]
    p = subprocess.run(cmd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == ("lunarseg train: error: --resume is not supported with --strategy multi-worker "
                                                 "(only the chief keeps checkpoints); start the workers again without --resume")
    assert not (tmp_path / "w0").exists()
