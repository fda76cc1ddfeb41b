"""The Google providers' Terraform schema, from a registry package, and a checker of terraform/*.tf.

`terraform init` cannot download providers here, so `terraform validate` cannot run. The schema
ships in PyPI's prebuilt CDKTF bindings, `cdktf-cdktf-provider-google` and
`cdktf-cdktf-provider-google-beta` 16.12.1 (hashicorp/google and google-beta 6.50.0, inside the
`~> 6.0` that terraform/versions.tf asks for): each wheel carries its jsii assembly
(`_jsii/*.jsii.tgz`, member `package/.jsii`), a JSON document that the CDKTF generator made from
`terraform providers schema -json`. In it every resource and data source is a class whose summary
names its Terraform type, its `<Class>Config` struct lists the arguments (`optional` absent means
required), and each nested block is a struct of its own; the Terraform name of every property is
the anchor of its registry link (`...#uniform_bucket_level_access`). Only the few types a
configuration uses are decoded (`json.JSONDecoder.raw_decode` at each type's offset), so loading
takes seconds, not the half minute a full parse of the two ~100 MB documents would.

What cannot be told from it: whether a struct-typed argument is a block or an attribute of object
type (both are accepted), and arguments that are only valid together or exclusive.
"""

from __future__ import annotations

import bisect
import difflib
import functools
import importlib.metadata
import json
import re
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

# Terraform provider source -> the PyPI distribution holding its schema.
DISTRIBUTIONS = {
    "hashicorp/google": "cdktf-cdktf-provider-google",
    "hashicorp/google-beta": "cdktf-cdktf-provider-google-beta",
}
META_ARGUMENTS = {"count", "for_each", "provider", "depends_on"}
RESOURCE_META_BLOCKS = {"lifecycle", "provisioner", "connection"}
LIFECYCLE = {"create_before_destroy", "prevent_destroy", "ignore_changes", "replace_triggered_by"}
CONDITION_BLOCKS = {"precondition", "postcondition"}
_SUMMARY = re.compile(
    r'"summary": "Represents a \{@link https://registry\.terraform\.io/providers/hashicorp/[\w-]+/[\w.]+/'
    r"docs(?:/(resources|data-sources)/\w+)? ([\w-]+)\}\.\""
)
_ANCHOR = re.compile(r"Docs at Terraform Registry: \{@link \S+#(\w+) ")


@dataclass(frozen=True)
class BlockSchema:
    """Arguments (name -> required) and nested blocks (name -> (schema, required)) of one block."""

    attributes: Mapping[str, bool] = field(default_factory=dict)
    blocks: Mapping[str, tuple[BlockSchema, bool]] = field(default_factory=dict)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class ProviderSchema:
    """One provider's resources, data sources and provider block, read lazily from its jsii assembly."""

    def __init__(self, distribution: str) -> None:
        self.distribution = distribution
        self.version = importlib.metadata.version(distribution)
        (archive,) = [f for f in importlib.metadata.files(distribution) or [] if str(f).endswith(".jsii.tgz")]
        with tarfile.open(str(archive.locate()), "r:gz") as tar:
            member = tar.next()
            while member is not None and member.name != "package/.jsii":
                member = tar.next()
            if member is None:
                raise FileNotFoundError(f"{distribution}: no package/.jsii in {archive}")
            handle = tar.extractfile(member)
            assert handle is not None
            # Latin-1: a one-byte-per-character string, decoded and searched fastest; names are ASCII.
            self._text = handle.read().decode("latin-1")
        start = self._text.index('\n  "types": {')
        found = re.compile(r'\n    "([^"\n]+)": \{').finditer(self._text, start)
        self._offsets = {m.group(1): m.end() - 1 for m in found}
        self._starts = sorted((offset, fqn) for fqn, offset in self._offsets.items())
        self._classes: dict[tuple[str, str], str] = {}  # (kind, terraform name) -> class fqn
        for match in _SUMMARY.finditer(self._text, start):
            kind = {"resources": "resource", "data-sources": "data", None: "provider"}[match.group(1)]
            where = bisect.bisect(self._starts, (match.start(), "\uffff")) - 1
            self._classes[(kind, match.group(2))] = self._starts[where][1]
        self._decoder = json.JSONDecoder()
        version = re.search(r"registry\.terraform\.io/providers/hashicorp/[\w-]+/(\d+\.\d+\.\d+)/docs", self._text)
        assert version, f"{distribution}: no provider version in its registry links"
        self.provider_version = version.group(1)

    def names(self, kind: str) -> set[str]:
        return {name for k, name in self._classes if k == kind}

    def _type(self, fqn: str) -> dict[str, Any]:
        value, _ = self._decoder.raw_decode(self._text, self._offsets[fqn])
        return dict(value)

    @functools.cache  # noqa: B019 - one schema object per provider, kept for the session
    def block(self, kind: str, name: str) -> BlockSchema | None:
        """The schema of resource / data source / provider `name`, or None when the provider has none."""
        fqn = self._classes.get((kind, name))
        if fqn is None:
            return None
        parameters = self._type(fqn)["initializer"]["parameters"]
        (config,) = [p["type"]["fqn"] for p in parameters if p["name"] == "config"]
        return self._struct(config)

    def _struct(self, fqn: str) -> BlockSchema:
        attributes: dict[str, bool] = {}
        blocks: dict[str, tuple[BlockSchema, bool]] = {}
        struct = self._type(fqn)
        for parent in struct.get("interfaces", []):
            if parent in self._offsets:
                inherited = self._struct(parent)
                attributes.update(inherited.attributes)
                blocks.update(inherited.blocks)
        for prop in struct.get("properties", []):
            docs = prop.get("docs", {})
            anchor = _ANCHOR.search(docs.get("remarks", "") + " " + docs.get("summary", ""))
            name = anchor.group(1) if anchor else _snake(prop["name"])
            required = not prop.get("optional", False)
            nested = [ref for ref in _fqns(prop["type"]) if ref in self._offsets]
            if nested:
                blocks[name] = (self._struct(nested[0]), required)
            else:
                attributes[name] = required
        return BlockSchema(attributes, blocks)


def _fqns(type_ref: Any) -> Iterator[str]:
    if isinstance(type_ref, dict):
        for key, value in type_ref.items():
            if key == "fqn" and isinstance(value, str):
                yield value
            else:
                yield from _fqns(value)
    elif isinstance(type_ref, list):
        for value in type_ref:
            yield from _fqns(value)


@functools.cache
def provider_schema(source: str) -> ProviderSchema:
    return ProviderSchema(DISTRIBUTIONS[source])


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def _body_items(body: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in body.items():
        if not key.startswith("__"):
            yield key, value


def _is_block_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


@dataclass
class Checker:
    """Checks every resource, data source and provider block of a directory of .tf files."""

    directory: Path
    problems: list[str] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)  # blocks found, by kind
    checked: dict[str, int] = field(default_factory=dict)  # blocks checked against a schema, by kind

    def run(self) -> list[str]:
        parsed = {path.name: hcl2.load(path.open(encoding="utf-8")) for path in sorted(self.directory.glob("*.tf"))}
        sources = self._provider_sources(parsed)
        for file_name, document in parsed.items():
            for kind in ("resource", "data"):
                for entry in document.get(kind, []):
                    for type_label, named in _body_items(entry):
                        for name_label, body in _body_items(named):
                            self.seen[kind] = self.seen.get(kind, 0) + 1
                            names = (_unquote(type_label), _unquote(name_label))
                            self._check_block(file_name, kind, *names, body, sources)
            for entry in document.get("provider", []):
                for label, body in _body_items(entry):
                    self.seen["provider"] = self.seen.get("provider", 0) + 1
                    local = _unquote(label)
                    where = f"{file_name}: provider {local}"
                    if local not in sources:
                        self.problems.append(f"{where}: not in required_providers")
                        continue
                    schema = provider_schema(sources[local]).block("provider", sources[local].split("/")[-1])
                    if schema is None:
                        self.problems.append(f"{where}: the {sources[local]} schema has no provider block")
                        continue
                    self._walk(where, body, schema, extra=set())
                    self.checked["provider"] = self.checked.get("provider", 0) + 1
        return self.problems

    @staticmethod
    def _provider_sources(parsed: Mapping[str, Any]) -> dict[str, str]:
        sources: dict[str, str] = {}
        for document in parsed.values():
            for terraform in document.get("terraform", []):
                for required in terraform.get("required_providers", []):
                    for local, spec in _body_items(required):
                        if isinstance(spec, dict) and "source" in spec:
                            sources[_unquote(local)] = _unquote(str(spec["source"]))
        return sources

    def _check_block(
        self, file_name: str, kind: str, type_name: str, name: str, body: Mapping[str, Any], sources: dict[str, str]
    ) -> None:
        where = f"{file_name}: {'data ' if kind == 'data' else ''}{type_name}.{name}"
        local = _unquote(str(body.get("provider", ""))).removeprefix("${").removesuffix("}").split(".")[0]
        local = local or type_name.split("_", 1)[0]
        if local not in sources:
            self.problems.append(f"{where}: provider {local!r} is not in required_providers")
            return
        if sources[local] not in DISTRIBUTIONS:
            return  # a provider whose schema this test does not have (none so far)
        provider = provider_schema(sources[local])
        schema = provider.block(kind, type_name)
        if schema is None:
            label = "data source" if kind == "data" else "resource type"
            self.problems.append(f"{where}: unknown {label} {type_name} in {provider.distribution} {provider.version}")
            return
        meta = META_ARGUMENTS | (RESOURCE_META_BLOCKS if kind == "resource" else {"lifecycle"})
        self._walk(where, body, schema, extra=meta)
        self.checked[kind] = self.checked.get(kind, 0) + 1

    def _walk(self, where: str, body: Mapping[str, Any], schema: BlockSchema, extra: set[str]) -> None:
        present: set[str] = set()
        for key, value in _body_items(body):
            if key in extra:
                if key == "lifecycle":
                    self._lifecycle(where, value)
                continue
            if key == "dynamic":
                for dynamic in value:
                    for label, spec in _body_items(dynamic):
                        block_name = _unquote(label)
                        present.add(block_name)
                        if block_name not in schema.blocks:
                            self.problems.append(f"{where}: unknown block {block_name!r} (dynamic)")
                            continue
                        for content in spec.get("content", []):
                            self._walk(f"{where}.{block_name}", content, schema.blocks[block_name][0], set())
                continue
            present.add(key)
            if key in schema.attributes:
                if _is_block_list(value) and all(v.get("__is_block__") for v in value):
                    self.problems.append(f"{where}: {key!r} is an argument, not a block")
                continue
            if key in schema.blocks:
                for instance in value if _is_block_list(value) else []:
                    self._walk(f"{where}.{key}", instance, schema.blocks[key][0], set())
                continue
            self.problems.append(f"{where}: unknown argument or block {key!r}{_hint(key, schema)}")
        for name, required in schema.attributes.items():
            if required and name not in present:
                self.problems.append(f"{where}: required argument {name!r} is not set")
        for name, (_, required) in schema.blocks.items():
            if required and name not in present:
                self.problems.append(f"{where}: required block {name!r} is missing")

    def _lifecycle(self, where: str, value: Any) -> None:
        for instance in value if _is_block_list(value) else []:
            for key, inner in _body_items(instance):
                if key in CONDITION_BLOCKS:
                    for condition in inner:
                        unknown = set(dict(_body_items(condition))) - {"condition", "error_message"}
                        missing = {"condition", "error_message"} - set(condition)
                        if unknown or missing:
                            self.problems.append(f"{where}.lifecycle.{key}: unknown {unknown}, missing {missing}")
                elif key not in LIFECYCLE:
                    self.problems.append(f"{where}.lifecycle: unknown argument {key!r}")


def _hint(name: str, schema: BlockSchema) -> str:
    close = difflib.get_close_matches(name, [*schema.attributes, *schema.blocks], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_directory(directory: Path) -> Checker:
    """The checker, run over every .tf file directly under `directory`: its problems, and the counts
    of blocks seen and checked by kind."""
    checker = Checker(directory)
    checker.run()
    return checker
