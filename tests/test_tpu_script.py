"""scripts/tpu_vm.sh without a cloud: its argument checks, and the gcloud commands it runs.

The commands go to a fake gcloud that records them; where the real gcloud is installed,
each recorded command must also pass gcloud's own argument parser (in a sandbox with no
account and the TPU API pointed at a dead port, so nothing can reach Google Cloud).
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from launch_helpers import REPO

SCRIPT = REPO / "scripts" / "tpu_vm.sh"
SETTINGS = {"TPU_NAME": "rir", "ZONE": "us-central2-b", "BUCKET": "gs://my-bucket/exp",
            "ACCELERATOR": "v4-32"}
# Everything the script reads from the environment: the caller's values must not leak in.
READS = (*SETTINGS, "TPU_VERSION", "SPOT", "PROJECT", "DRY_RUN", "GCLOUD")


@pytest.fixture
def fake_gcloud(tmp_path):
  """A gcloud that appends its arguments, as one JSON list per line, to calls.jsonl."""
  fake = tmp_path / "gcloud"
  fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                  f"with open({str(tmp_path / 'calls.jsonl')!r}, 'a') as f:\n"
                  "  f.write(json.dumps(sys.argv[1:]) + '\\n')\n")
  fake.chmod(0o755)
  return fake


def script(*args, tmp_path, **env):
  clean = {k: v for k, v in os.environ.items() if k not in READS}
  return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                        env={**clean, "TMPDIR": str(tmp_path), **env}, timeout=60)


def calls(tmp_path) -> list[list[str]]:
  path = tmp_path / "calls.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("args, env, phrase", [
    ([], SETTINGS, "no command"),
    (["launch"], SETTINGS, "unknown command 'launch'"),
    (["create"], {"ZONE": "us-central2-b"}, "TPU_NAME"),
    (["create"], {"TPU_NAME": "rir"}, "ZONE"),
    (["create", "extra"], SETTINGS, "create takes no arguments"),
    (["delete", "now"], SETTINGS, "delete takes no arguments"),
    (["prepare"], SETTINGS, "DATASET"),
    (["prepare", "mnist"], {**SETTINGS, "BUCKET": ""}, "BUCKET"),
    (["install"], {"TPU_NAME": "rir", "ZONE": "us-central2-b"}, "BUCKET"),
    (["prepare", "mnist"], {**SETTINGS, "BUCKET": "my-bucket"}, "gs://"),
    (["train"], SETTINGS, "RUN and CONFIG"),
    (["train", "rir1"], SETTINGS, "RUN and CONFIG"),
    (["train", "../up", "configs/rir_cifar.py"], SETTINGS, "RUN '../up'"),
    (["train", "rir1", "configs/nope.py"], SETTINGS, "configs/nope.py"),
    (["train", "rir1", "/etc/passwd"], SETTINGS, "/etc/passwd"),
    (["resume", "rir1"], SETTINGS, "RUN and CONFIG"),
])
def test_bad_arguments_exit_2_with_one_line(args, env, phrase, tmp_path, fake_gcloud):
  result = script(*args, tmp_path=tmp_path, GCLOUD=str(fake_gcloud), **env)
  assert result.returncode == 2, result
  assert len(result.stderr.splitlines()) == 1 and phrase in result.stderr, result.stderr
  assert not calls(tmp_path)  # nothing ran


def test_help_and_missing_gcloud(tmp_path):
  help_ = script("--help", tmp_path=tmp_path)
  assert help_.returncode == 0 and "resume RUN CONFIG" in help_.stdout
  missing = script("create", tmp_path=tmp_path, GCLOUD=str(tmp_path / "none"), **SETTINGS)
  assert missing.returncode == 2 and "not found" in missing.stderr and "--dry_run" in missing.stderr


def test_dry_run_prints_the_commands_and_runs_nothing(tmp_path, fake_gcloud):
  for dry in (["--dry_run"], []):
    env = {"DRY_RUN": "1"} if not dry else {}
    result = script(*dry, "train", "rir1", "configs/rir_cifar.py", "--config.seed=3",
                    tmp_path=tmp_path, GCLOUD=str(fake_gcloud), **SETTINGS, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{fake_gcloud} compute tpus tpu-vm ssh rir --worker=all")
    for part in ("launch.py --config=configs/rir_cifar.py", "--auto_distributed --config.seed=3",
                 "--workdir=$HOME/bucket/runs/rir1", "logs/rir1/$(hostname).log",
                 "--zone=us-central2-b"):
      assert part in result.stdout
  assert not calls(tmp_path)


def test_commands_of_each_step(tmp_path, fake_gcloud):
  def run(*args, **env):
    result = script(*args, tmp_path=tmp_path, GCLOUD=str(fake_gcloud), **SETTINGS, **env)
    assert result.returncode == 0, result.stderr
    made = calls(tmp_path)
    (tmp_path / "calls.jsonl").unlink(missing_ok=True)
    return made

  tpu = ["compute", "tpus", "tpu-vm"]
  zone = "--zone=us-central2-b"
  assert run("create", SPOT="1", PROJECT="p") == [
      [*tpu, "create", "rir", "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base",
       "--spot", zone, "--project=p"]]
  assert run("delete") == [[*tpu, "delete", "rir", "--quiet", zone]]

  scp, ssh = run("install")
  assert (tmp_path / "rir-jax.tar.gz").stat().st_size > 0  # `git archive` of HEAD, for real
  assert scp[:4] == [*tpu, "scp"] and "--worker=all" in scp
  assert ssh[:6] == [*tpu, "ssh", "rir", "--worker=all"]
  for part in ("gcsfuse", "--only-dir=exp my-bucket ~/bucket",
               "pip install -q -e ~/rir-jax 'jax[tpu]"):
    assert part in ssh[6]

  (prepare,) = run("prepare", "cifar10", "--manual_dir", "/data/cifar 10")
  assert prepare[5] == "--worker=0"
  assert r"rir_jax.data.prepare cifar10 --manual_dir /data/cifar\ 10 --data_dir" in prepare[6]

  # After a preemption: a new slice, installed again, then the very same train command.
  (train,) = run("train", "rir1", "configs/rir_cifar.py:smoke", "--config.seed=3")
  resume = run("resume", "rir1", "configs/rir_cifar.py:smoke", "--config.seed=3")
  assert [c[3] for c in resume] == ["delete", "create", "scp", "ssh", "ssh"]
  assert resume[-1] == train
  for remote in (ssh[6], prepare[6], train[6]):  # what the workers' shells will run
    syntax = subprocess.run(["bash", "-n", "-c", remote.removeprefix("--command=")],
                            capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_recorded_commands_pass_gclouds_own_parser(tmp_path, fake_gcloud):
  gcloud = shutil.which("gcloud")
  if gcloud is None:
    pytest.skip("gcloud is not installed")
  for args in (["create"], ["install"], ["prepare", "mnist"],
               ["train", "r", "configs/rir_cifar.py"], ["delete"]):
    assert script(*args, tmp_path=tmp_path, GCLOUD=str(fake_gcloud), SPOT="1",
                  **SETTINGS).returncode == 0
  recorded = calls(tmp_path)
  # No account, no GCE metadata credentials, the TPU API on a dead port: parse, then fail.
  sandbox = {k: v for k, v in os.environ.items()
             if not k.startswith(("CLOUDSDK_", "GOOGLE_", "GCE_"))}
  sandbox.update(CLOUDSDK_CONFIG=str(tmp_path / "gcloud_config"),
                 CLOUDSDK_CORE_DISABLE_PROMPTS="1", CLOUDSDK_CORE_CHECK_GCE_METADATA="false",
                 CLOUDSDK_API_ENDPOINT_OVERRIDES_TPU="http://127.0.0.1:9/")
  for args in recorded:
    result = subprocess.run([gcloud, *args], capture_output=True, text=True, env=sandbox,
                            timeout=120)
    assert result.returncode != 2 and "unrecognized arguments" not in result.stderr, (
        args, result.stderr)
