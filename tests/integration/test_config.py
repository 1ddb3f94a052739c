"""The configuration files against the real binary: the shipped files are
valid, config/vigil.conf.example documents exactly the keys of the table
(`vigil --print-keys`), and a wrong file is reported as file:line: key.
"""

import re
import subprocess

import pytest

import vigil

CONFIG = vigil.REPO / "config"
EXAMPLE = CONFIG / "vigil.conf.example"
DEFAULT = CONFIG / "vigil.conf"

SECTION = re.compile(r"^\[\s*(node|storage|http|outbox|ae|route|model)\b[^\]]*\]")
# "key = value", or "# key = value" for an optional key shown commented.
KEY = re.compile(r"^[#;]?\s*([a-z_]+)\s*=")
ACTIVE_KEY = re.compile(r"^\s*([a-z_]+)\s*=")


def run_vigil(*args):
    assert vigil.VIGIL.exists(), "%s not built (run make)" % vigil.VIGIL
    return subprocess.run([str(vigil.VIGIL)] + list(args),
                          capture_output=True, text=True, timeout=30)


def check_config(path):
    return run_vigil("--check-config", "-c", str(path))


def table_keys():
    """{(section, key): default} from --print-keys."""
    r = run_vigil("--print-keys")
    assert r.returncode == 0, r.stderr
    keys = {}
    for line in r.stdout.splitlines():
        section, key, typ, default = line.split(" ", 3)
        assert typ in ("int", "bool", "string", "enum", "size", "double",
                       "path", "list"), line
        keys[(section, key)] = default
    return keys


def file_keys(path, pattern):
    """{(section, key): (value text, comment line above)} of a config
    file, keys matched by PATTERN; header lines name the section."""
    found = {}
    section = None
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        m = SECTION.match(line)
        if m:
            section = m.group(1)
            continue
        m = pattern.match(line)
        if m:
            value = line.split("=", 1)[1].strip()
            above = lines[i - 1].strip() if i else ""
            found.setdefault((section, m.group(1)), (value, above))
    return found


@pytest.mark.parametrize("path", [DEFAULT, EXAMPLE], ids=lambda p: p.name)
def test_shipped_files_are_valid(path):
    r = check_config(path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


def test_example_documents_every_key():
    table = table_keys()
    documented = file_keys(EXAMPLE, KEY)
    assert set(documented) == set(table), (
        "in the table only: %s; in the example only: %s"
        % (sorted(set(table) - set(documented)),
           sorted(set(documented) - set(table))))
    for (section, key), (value, above) in documented.items():
        # Each key has a comment line above it saying what it does.
        assert above.startswith("#") and not KEY.match(above), (section, key)
        default = table[(section, key)]
        # An uncommented key with a default shows that default.
        if default != "-" and not re.match(r"^[#;]", value):
            assert value == default, (section, key, value, default)


def test_default_config_uses_only_table_keys():
    table = table_keys()
    used = file_keys(DEFAULT, ACTIVE_KEY)
    assert used, "no keys found in vigil.conf"
    assert set(used) <= set(table), sorted(set(used) - set(table))


def test_malformed_file_reports_file_line_key(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text("[node]\n"                       # 1
                    "ae_title = VIGIL\n"             # 2
                    "; a comment\n"                  # 3
                    "port = 70000\n"                 # 4
                    "[bogus]\n"                      # 5
                    "x = 1\n"                        # 6
                    "[storage]\n"                    # 7
                    "min_free_disk = 12Q\n"          # 8
                    "[node]\n")                      # 9
    r = check_config(path)
    assert r.returncode == 1
    err = r.stderr
    assert "%s:4: port: 70000 is out of range 1..65535" % path in err
    assert "%s:5: [bogus]: unknown section" % path in err
    assert "%s:8: min_free_disk: " % path in err
    assert "%s:9: [node]: duplicate section" % path in err
    lines = [l for l in err.splitlines() if l.startswith(str(path))]
    assert len(lines) == 4, err


def test_missing_required_key_reported_at_header(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text("[node]\n"
                    "\n"
                    "[ae pacs]\n"                    # 3
                    "ae_title = PACS\n"
                    "port = 104\n"
                    "[route r]\n"                    # 6
                    "model = bone\n"
                    "modality = CT\n"
                    "destinations = pacs\n")         # 9
    r = check_config(path)
    assert r.returncode == 1
    assert "%s:3: role: required in [ae pacs]" % path in r.stderr


def test_missing_file(tmp_path):
    path = tmp_path / "none.conf"
    r = check_config(path)
    assert r.returncode == 1
    assert "%s: No such file or directory" % path in r.stderr
