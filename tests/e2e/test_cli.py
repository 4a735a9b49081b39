"""The `concord` command itself: migrate, help, version, usage errors.

What an operator relies on: `concord migrate` brings a database to the
schema this build needs and says so, is safe to run twice, and every
mistake on the command line gets a message and exit status 2.
"""

import re
import subprocess


def run(concord_bin, *args):
    return subprocess.run([concord_bin, *args], capture_output=True, text=True, timeout=60)


def test_migrate_a_new_database_then_again(concord_bin, tmp_path):
    db = str(tmp_path / "m.db")
    first = run(concord_bin, "migrate", "--db", db)
    assert first.returncode == 0, first.stderr
    m = re.search(r"migrated to version (\d+)", first.stdout)
    assert m, first.stdout
    again = run(concord_bin, "migrate", "--db", db)
    assert again.returncode == 0, again.stderr
    assert f"schema is at version {m.group(1)}: nothing to do" in again.stdout


def test_usage_errors_exit_2_with_a_message(concord_bin, tmp_path):
    for args in (["no-such-command"], ["serve", "--http", "nonsense"], ["serve", "--bogus"],
                 ["serve", "--mllp", "127.0.0.1:99999"], ["quarantine", "show"]):
        r = run(concord_bin, *args, "--db", str(tmp_path / "u.db"))
        assert r.returncode == 2, (args, r.returncode, r.stdout, r.stderr)
        assert r.stderr.strip(), args


def test_help_and_version(concord_bin):
    h = run(concord_bin, "--help")
    assert h.returncode == 0 and "serve" in h.stdout and "--db DB" in h.stdout
    v = run(concord_bin, "--version")
    assert v.returncode == 0 and re.fullmatch(r"concord \d+\.\d+\.\d+\n", v.stdout)


def test_unreachable_postgresql_is_a_clear_error(concord_bin):
    r = run(concord_bin, "migrate", "--db", "postgresql://nobody@127.0.0.1:1/none")
    assert r.returncode == 1
    assert "PostgreSQL" in r.stderr
