"""The ctypes mirrors against moas.h: every struct's size and field offsets as the C compiler lays them out, every
enumeration value, and a prototype (argument and return types) for every MOAS_API function."""
import ctypes
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

import moas
from moas import _lib, config, errors

HERE = os.path.dirname(os.path.abspath(__file__))


def include_dir():
    candidates = [os.environ.get("MOAS_INCLUDE_DIR"), os.path.join(HERE, "..", "..", "..", "include")]
    for d in candidates:
        if d and os.path.isfile(os.path.join(d, "moas.h")):
            return os.path.abspath(d)
    pytest.skip("moas.h not found: set MOAS_INCLUDE_DIR")


def header_text():
    with open(os.path.join(include_dir(), "moas.h")) as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def header_structs():
    """{struct name: [(field, array length or None)]} in declaration order."""
    structs = {}
    for m in re.finditer(r"typedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", header_text(), re.S):
        fields = []
        for decl in m.group(2).split(";"):
            decl = decl.strip()
            if decl:
                f = re.match(r"(.+?)\b(\w+)\s*(?:\[\s*(\w+)\s*\])?$", decl, re.S)
                fields.append((f.group(2), f.group(3)))
        structs[m.group(3)] = fields
    return structs


def header_functions():
    """{name: (return type text, [parameter declarations])}."""
    functions = {}
    for m in re.finditer(r"MOAS_API\s+(.+?)\b(\w+)\s*\(([^)]*)\)\s*;", header_text(), re.S):
        params = [p.strip() for p in m.group(3).split(",")]
        functions[m.group(2)] = (m.group(1).strip(), [] if params == ["void"] else params)
    return functions


def header_constants():
    names = re.findall(r"\b(MOAS_[A-Z0-9_]+)\s*=", header_text())
    return names


def compiler():
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        pytest.skip("no C compiler")
    return cc


def run_c(tmp_path, body):
    src = tmp_path / "probe.c"
    exe = tmp_path / "probe"
    src.write_text("#include <stddef.h>\n#include <stdio.h>\n#include <moas.h>\nint main(void) {\n" + body +
                   "  return 0;\n}\n")
    subprocess.run([compiler(), "-std=c99", "-I", include_dir(), str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return dict(line.rsplit(" ", 1) for line in out.splitlines())


def test_every_header_struct_is_mirrored_field_by_field():
    structs = header_structs()
    assert set(structs) == set(_lib.STRUCTS), "structs of moas.h vs the mirrors in moas/_lib.py"
    for name, fields in structs.items():
        mirrored = [f[0] for f in _lib.STRUCTS[name]._fields_]
        assert mirrored == [f for f, _ in fields], f"{name}: field names or order differ from moas.h"


def test_struct_sizes_and_offsets_match_the_c_compiler(tmp_path):
    structs = header_structs()
    body = ""
    for name, fields in structs.items():
        body += f'  printf("{name} %zu\\n", sizeof({name}));\n'
        for field, _ in fields:
            body += f'  printf("{name}.{field}@ %zu\\n", offsetof({name}, {field}));\n'
            body += f'  printf("{name}.{field}# %zu\\n", sizeof((({name} *)0)->{field}));\n'
    c = run_c(tmp_path, body)
    for name, fields in structs.items():
        cls = _lib.STRUCTS[name]
        assert ctypes.sizeof(cls) == int(c[name]), f"sizeof({name})"
        for field, _ in fields:
            assert getattr(cls, field).offset == int(c[f"{name}.{field}@"]), f"offsetof({name}, {field})"
            assert getattr(cls, field).size == int(c[f"{name}.{field}#"]), f"sizeof {name}.{field}"


def test_constants_and_enumerations_match_the_header(tmp_path):
    names = header_constants() + ["MOAS_ABI_VERSION", "MOAS_MAX_BRANCHES", "MOAS_MAX_DIMS", "MOAS_MAX_ROUTES"]
    c = {k: int(v) for k, v in run_c(tmp_path, "".join(f'  printf("{n} %d\\n", (int){n});\n' for n in names)).items()}
    assert c["MOAS_ABI_VERSION"] == _lib.ABI_VERSION == moas.ABI_VERSION
    for n in ("MOAS_MAX_BRANCHES", "MOAS_MAX_DIMS", "MOAS_MAX_ROUTES"):
        assert getattr(_lib, n) == c[n]
    tables = {"MOAS_NORM_": config.NORMS, "MOAS_MLP_": config.MLPS, "MOAS_POSITION_": config.POSITIONS,
              "MOAS_ATTENTION_": config.ATTENTIONS, "MOAS_MODE_": config.MOAS_MODES, "MOAS_DEVICE_": config.DEVICES,
              "MOAS_MOH_GATES_": config.GATE_VARIANTS, "MOAS_MATMUL_": config.MATMUL_PRECISIONS}
    strategies = {"MOAS_HEADS_ALL": config._STRATEGY_ALL, "MOAS_HEADS_MIXTURE": config._STRATEGY_MIXTURE,
                  "MOAS_HEADS_STATIC_PRUNING": config._STRATEGY_PRUNING}
    for name in header_constants():
        value = c[name]
        if name == "MOAS_OK":
            assert value == 0
        elif name.startswith("MOAS_ERR_"):
            assert value in errors.BY_STATUS, f"no exception class for {name}"
        elif name.startswith("MOAS_HEADS_"):
            assert strategies[name] == value
        else:
            prefix = next(p for p in tables if name.startswith(p))
            assert tables[prefix][name[len(prefix):].lower()] == value, name
    assert sorted(errors.BY_STATUS) == sorted(v for k, v in c.items() if k.startswith("MOAS_ERR_"))


_SCALARS = {"int32_t": ctypes.c_int32, "uint32_t": ctypes.c_uint32, "int64_t": ctypes.c_int64,
            "uint64_t": ctypes.c_uint64, "size_t": ctypes.c_size_t, "float": ctypes.c_float,
            "moas_status": ctypes.c_int}


def expected_ctype(decl):
    """The ctypes type a C declaration ("const moas_model *model", "const char *") must be mirrored with."""
    decl = re.sub(r"\bconst\b", " ", decl)
    stars = decl.count("*")
    words = decl.replace("*", " ").split()
    base = words[0]
    if base == "void" and stars == 0:
        return None
    if base == "char" and stars == 1:
        return ctypes.c_char_p
    if base in ("moas_model", "moas_kv_cache", "moas_layer"):  # opaque handles
        return ctypes.c_void_p if stars == 1 else ctypes.POINTER(ctypes.c_void_p)
    t = _lib.STRUCTS.get(base) or _SCALARS[base]
    for _ in range(stars):
        t = ctypes.POINTER(t)
    return t


def test_every_function_has_a_binding_with_the_header_signature():
    functions = header_functions()
    assert len(functions) >= 29
    assert set(functions) == set(_lib.PROTOTYPES), "MOAS_API functions vs moas/_lib.py PROTOTYPES"
    lib = _lib.lib()
    for name, (ret, params) in functions.items():
        restype, argtypes = _lib.PROTOTYPES[name]
        assert restype == expected_ctype(ret), f"{name}: return type"
        assert [expected_ctype(p) for p in params] == list(argtypes), f"{name}: argument types"
        assert getattr(lib, name).argtypes == argtypes and getattr(lib, name).restype == restype


def _python(code, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MOAS_LIBRARY")}
    full_env.update(env)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(moas.__file__)), full_env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True)


def test_library_with_another_abi_version_is_refused(tmp_path):
    stubs = "".join(f"int {n}(void) {{ return 0; }}\n" for n in _lib.PROTOTYPES if n != "moas_abi_version")
    (tmp_path / "fake.c").write_text(stubs + "unsigned moas_abi_version(void) { return 2; }\n")
    fake = tmp_path / "libmoas.so"
    subprocess.run([compiler(), "-shared", "-fPIC", str(tmp_path / "fake.c"), "-o", str(fake)], check=True)
    code = textwrap.dedent("""
        import moas
        try:
            moas.Model()
        except moas.LibraryError as e:
            print("refused:", e)
    """)
    result = _python(code, MOAS_LIBRARY=str(fake))
    assert "refused:" in result.stdout and "ABI version 2" in result.stdout and "version 1" in result.stdout, \
        result.stdout + result.stderr


def test_library_search_order():
    real = os.path.realpath(_lib.lib()._moas_path)
    code = "import moas, os; print(os.path.realpath(moas.library_path()))"
    by_dir = _python(code, MOAS_LIBRARY_DIR=os.path.dirname(real))
    assert by_dir.returncode == 0, by_dir.stderr
    assert os.path.dirname(by_dir.stdout.strip()) == os.path.dirname(real)
    missing = _python("import moas; moas.load_library()", MOAS_LIBRARY="/nonexistent/libmoas.so")
    assert missing.returncode != 0 and "LibraryError" in missing.stderr and "MOAS_LIBRARY" in missing.stderr
