"""Where a model comes from: a folder, a Hub id, or one GGUF file as llama.cpp, Ollama and LM Studio keep them.

A GGUF file is read with transformers' own GGUF loading (the `gguf` package), dequantized to full precision (the
trainers cannot train quantized GGUF tensors, and `save_pretrained` refuses them), and saved once as a normal
safetensors folder in toyllm's cache; every later load reads that folder. The GGUF's own metadata (name, organization,
licence) is kept beside the weights in `toyllm_source.json` and carried from stage to stage into the model cards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

from toyllm.errors import UserError
from toyllm.files import atomic_write_text

logger = logging.getLogger(__name__)

GGUF_SUFFIX = ".gguf"
SOURCE_FILE = "toyllm_source.json"  # where a checkpoint's weights first came from, when not from a Hub id
GGUF_METADATA = {  # GGUF key -> the name toyllm_source.json gives it
    "general.name": "name",
    "general.organization": "organization",
    "general.basename": "basename",
    "general.size_label": "size",
    "general.finetune": "finetune",
    "general.license": "license",
}


def is_gguf(name: str | Path | None) -> bool:
    return bool(name) and str(name).lower().endswith(GGUF_SUFFIX)


def is_local_model(path: str | Path) -> bool:
    """A checkpoint folder (a full model or a LoRA adapter) or a GGUF file that exists here."""
    return Path(path).is_dir() or is_gguf(path) and Path(path).is_file()


def checkpoint_tokenizer(path: str | Path):
    """The tokenizer saved with a checkpoint folder or an adapter folder, or a GGUF file's (from its converted
    folder)."""
    return AutoTokenizer.from_pretrained(model_folder(str(path)))


def cache_dir() -> Path:
    """`$TOYLLM_CACHE`, else `~/.cache/toyllm` (`$XDG_CACHE_HOME/toyllm` where it is set)."""
    if "TOYLLM_CACHE" in os.environ:
        return Path(os.environ["TOYLLM_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "toyllm"


def model_folder(name: str) -> str:
    """`name` itself (a folder or a Hub id), or for a GGUF file the safetensors folder it converts to, converted the
    first time and read from the cache after (keyed by the file's content, so a copy elsewhere shares it)."""
    if not is_gguf(name):
        return name
    path = Path(name).expanduser()
    if not path.is_file():
        raise UserError(f"{name}: no such GGUF file (make real-model fetches SmolLM2-135M-Instruct's)")
    folder = cache_dir() / "gguf" / f"{path.stem}-{file_digest(path)[:12]}"
    if not (folder / SOURCE_FILE).is_file():
        convert_gguf(path, folder)
    return str(folder)


_digests: dict[tuple, str] = {}


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes (0.3 s for 100 MB), remembered per path, size and modification time."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 24), b""):
                digest.update(block)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def gguf_metadata(path: Path) -> dict:
    """The GGUF header's description of the model: name, organization, licence ..., where the file has them."""
    from gguf import GGUFReader  # imported where used: convert_gguf names the package when it is missing

    fields = GGUFReader(path).fields
    found = {ours: fields[key].contents() for key, ours in GGUF_METADATA.items() if key in fields}
    return {key: str(value) for key, value in found.items()}


def convert_gguf(path: Path, folder: Path) -> Path:
    """The GGUF file's tokenizer (with its chat template) and dequantized weights, saved as a safetensors folder."""
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files with it; an optional dependency of theirs)
    except ImportError:
        raise UserError(f"{path}: reading a GGUF file needs the gguf package (pip install gguf)") from None
    logger.warning(f"{path}: converting the GGUF file to a safetensors folder, once: {folder}")
    scratch = folder.with_name(f"{folder.name}.converting-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, quantization_config=GgufConfig(dequantize=True)
        )
    except (ValueError, RuntimeError, KeyError, OSError) as error:  # transformers' GGUF loader on a file it cannot map
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: transformers cannot load this GGUF file ({first_line})") from None
    model.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    source = {"gguf_file": str(path.resolve())} | gguf_metadata(path)
    atomic_write_text(scratch / SOURCE_FILE, json.dumps(source, indent=1) + "\n")
    if (folder / SOURCE_FILE).is_file():  # another process converted it meanwhile
        shutil.rmtree(scratch)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.replace(scratch, folder)
    return folder


def read_source(folder: str | Path | None) -> dict | None:
    """What `toyllm_source.json` in a checkpoint folder says of the model its weights came from, if anything."""
    if not folder:
        return None
    try:
        return json.loads((Path(folder) / SOURCE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def carry_source(from_folder: str | Path | None, to_folder: str | Path) -> dict | None:
    """A stage started from `from_folder` keeps its source's description, so every card down the chain names it."""
    source = read_source(from_folder)
    if source is not None:
        atomic_write_text(Path(to_folder) / SOURCE_FILE, json.dumps(source, indent=1) + "\n")
    return source


def describe_source(source: dict) -> str:
    """'Smollm2 135M ... by HuggingFaceTB (licence apache-2.0), from the GGUF file /path/x.gguf'."""
    who = f" by {source['organization']}" if source.get("organization") else ""
    licence = f" (licence {source['license']})" if source.get("license") else ""
    where = f", from the GGUF file {source['gguf_file']}" if source.get("gguf_file") else ""
    return f"{source.get('name', 'unnamed model')}{who}{licence}{where}"
