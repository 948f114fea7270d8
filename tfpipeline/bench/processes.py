"""Child processes of the benchmarks: each setting runs in a fresh one."""

import json
import subprocess


def run_json(command: list[str]) -> dict:
  """Runs a child process; its last JSON line, or {'error': its last line}."""
  completed = subprocess.run(command, capture_output=True, text=True,
                             check=False)
  for line in reversed(completed.stdout.splitlines()):
    if line.startswith('{'):
      return json.loads(line)
  tail = completed.stderr.strip().splitlines()[-1:] or ['no output']
  return {'error': tail[0]}
