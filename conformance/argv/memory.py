"""Guest memory back-ends: -object memory-backend-{ram,file,memfd} (+ thread-context) as libvirt builds them
(qemuBuildMemoryBackendProps) for the machine's RAM, each NUMA cell and each memory device."""

from __future__ import annotations

from typing import Any

from conformance.argv.context import Ctx
from conformance.argv.harness import (
    DOMAIN_ID,
    HOST_CPUS_PER_NODE,
    HOST_NUMA_NODES,
    HUGEPAGE_DEFAULT_KIB,
    HUGETLBFS_MOUNTS,
    MEMORY_BACKING_DIR,
    SYSTEM_PAGE_KIB,
)
from conformance.domain.model import MemoryDevice
from conformance.errors import UnsupportedByQemu


def short_name(ctx: Ctx) -> str:
    """ID-NAME with the name cut to 20 characters (virDomainDefGetShortName)."""
    return f"{DOMAIN_ID}-{ctx.domain.name[:20]}"


def _backing(ctx: Ctx, tag: str, attr: str = "mode") -> str | None:
    mb = ctx.domain.memory_backing
    if mb is None:
        return None
    el = next((c for c in mb.children if c.tag == tag), None)
    return el.get(attr) if el is not None else None


def node_list(text: str) -> list[int]:
    """'0-2,^1,5' -> [0, 2, 5]."""
    out: set[int] = set()
    for part in text.split(","):
        neg = part.startswith("^")
        lo, _, hi = part.lstrip("^").partition("-")
        nums = set(range(int(lo), int(hi or lo) + 1))
        out = out - nums if neg else out | nums
    return sorted(out)


def _pagesize_kib(ctx: Ctx, node: int | None, mem: MemoryDevice | None) -> int:
    """The huge page size backing this memory, 0 for none."""
    if mem is not None and mem.source.get("pagesize"):
        size = int(mem.source["pagesize"])
    else:
        mb = ctx.domain.memory_backing
        if mb is None or mb.hugepages is None:
            return 0
        size = 0
        pages = mb.hugepages
        if not pages:
            size = HUGEPAGE_DEFAULT_KIB
        if node is not None:
            match = next((p for p in pages if p.get("nodeset") and node in node_list(p["nodeset"])), None)
            if match is not None:
                size = _kib(match)
        if not size:
            default = next((p for p in pages if not p.get("nodeset")), None)
            if default is not None:
                size = _kib(default)
            elif node is None and pages:
                size = _kib(pages[0])
    return 0 if size == SYSTEM_PAGE_KIB else size


def _kib(page: dict[str, str]) -> int:
    size = int(page.get("size", HUGEPAGE_DEFAULT_KIB))
    unit = page.get("unit", "KiB").lower()
    return size * {"b": 1, "bytes": 1, "kib": 1024, "k": 1024, "mib": 1 << 20, "m": 1 << 20, "gib": 1 << 30,
                   "g": 1 << 30}.get(unit, 1024) // 1024


def _host_nodes(ctx: Ctx, node: int | None, mem: MemoryDevice | None) -> tuple[list[int], str] | None:
    """The host nodes and policy of a guest node's memory (or the whole guest's), or None: a memory device's
    own <nodemask>, else numatune's <memnode> for the node, else its <memory> (numad's advice, every host
    node, under placement='auto')."""
    if mem is not None and mem.source.get("nodemask"):
        return node_list(mem.source["nodemask"]), "bind"
    nt = ctx.domain.numatune
    if nt is None:  # vCPUs placed by numad without <numatune>: memory too (virDomainNumatuneParseXML)
        return (list(range(HOST_NUMA_NODES)), "bind") if ctx.domain.vcpu_attrs.get("placement") == "auto" else None
    chosen = None
    if node is not None:
        chosen = next((m for m in nt.memnodes if m.get("cellid") == str(node)), None)
    if chosen is None or not chosen.get("nodeset"):
        chosen = nt.memory
    mode = chosen.get("mode", "strict")
    if mode == "restrictive":
        return None
    if chosen.get("nodeset"):
        nodes = node_list(chosen["nodeset"])
    elif chosen.get("placement") == "auto" or (not chosen.get("placement") and
                                               ctx.domain.vcpu_attrs.get("placement") == "auto"):
        nodes = list(range(HOST_NUMA_NODES))
    else:
        return None
    return nodes, {"strict": "bind"}.get(mode, mode)


def cell_needs_backend(ctx: Ctx, node: int, access: str | None) -> bool:
    """A NUMA cell needs a memory-backend object (qemuBuildMemoryBackendProps's "none of the following is
    requested"): huge pages chosen for this node, numatune for this node, a memory access mode, or memory
    backed by a file or memfd."""
    mb = ctx.domain.memory_backing
    pages = mb.hugepages if mb is not None and mb.hugepages else []
    if any(p.get("nodeset") and node in node_list(p["nodeset"]) and _kib(p) != SYSTEM_PAGE_KIB for p in pages):
        return True
    nt = ctx.domain.numatune
    if nt is not None and any(m.get("cellid") == str(node) for m in nt.memnodes):
        return True
    return bool(access or _backing(ctx, "access") or _backing(ctx, "source", "type") in ("file", "memfd"))


def legacy_memory_args(ctx: Ctx) -> None:
    """-mem-prealloc and -mem-path for guest RAM without memory-backend objects (qemuBuildMemPathStr):
    huge pages from <memoryBacking> (preallocated), or <allocation mode='immediate'>."""
    mb = ctx.domain.memory_backing
    pages = mb.hugepages if mb is not None and mb.hugepages is not None else None
    path = None
    prealloc = _backing(ctx, "allocation") == "immediate"
    if pages is not None:
        size = _kib(pages[0]) if pages else HUGEPAGE_DEFAULT_KIB
        if size != SYSTEM_PAGE_KIB:
            mount = HUGETLBFS_MOUNTS.get(size)
            if mount is None:
                raise UnsupportedByQemu(f"internal error: Unable to find any usable hugetlbfs mount for {size} KiB",
                                        path=ctx.domain.source)
            path = f"{mount}/libvirt/qemu/{short_name(ctx)}"
            prealloc = True
    if prealloc:
        ctx.add("-mem-prealloc")
    if path:
        ctx.add("-mem-path", path)


def check_host_nodes(ctx: Ctx) -> None:
    """numatune may only name the (harness) host's NUMA nodes (virNumaNodesetIsAvailable; the harness of
    libvirt before 10 did not check)."""
    nt = ctx.domain.numatune
    if nt is None or not ctx.modern_libvirt:
        return
    for entry in (nt.memory, *nt.memnodes):
        for node in node_list(entry["nodeset"]) if entry.get("nodeset") else []:
            if node >= HOST_NUMA_NODES:
                raise UnsupportedByQemu(f"<numatune>: unsupported configuration: NUMA node {node} is unavailable",
                                        path=ctx.domain.source)


def _thread_affinity(ctx: Ctx, nodes: list[int]) -> list[int]:
    """The host nodes a preallocation thread-context may run on: the memory's nodes, less those the vCPUs
    are not pinned to (<vcpu cpuset=>)."""
    cpuset = ctx.domain.vcpu_attrs.get("cpuset")
    if not cpuset:
        return nodes
    pinned = {cpu // HOST_CPUS_PER_NODE for cpu in node_list(cpuset)}
    return [n for n in nodes if n in pinned]


def _prealloc(ctx: Ctx, pagesize: int, mem: MemoryDevice | None, nvdimm_path: str | None) -> bool:
    """Whether the memory is preallocated (qemuBuildMemoryGetPagesize): <allocation mode='immediate'>,
    huge pages (unless on demand), an NVDIMM file that is not real persistent memory."""
    allocation = _backing(ctx, "allocation")
    if mem is not None and mem.model == "virtio-pmem":
        return allocation == "immediate"
    return allocation == "immediate" or bool(pagesize and allocation != "ondemand") or \
        (nvdimm_path is not None and not (mem is not None and mem.source_pmem))


def memory_device_prealloc(ctx: Ctx, mem: MemoryDevice) -> bool:
    """Whether a memory device's memory is preallocated (a virtio-mem device does it itself)."""
    return _prealloc(ctx, _pagesize_kib(ctx, mem.target_node, mem), mem, None)


def backend_objects(ctx: Ctx, alias: str, size: int, *, node: int | None = None, mem: MemoryDevice | None = None,
                    system: bool = False, access: str | None = None,
                    discard: str | None = None, path_name: str | None = None) -> list[dict[str, Any]]:
    """The -object(s) of one memory back-end: an optional thread-context, then the back-end."""
    pagesize = _pagesize_kib(ctx, node, mem)
    if mem is not None and mem.attrs.get("access"):
        access = mem.attrs["access"]
    elif mem is not None and node is not None and ctx.domain.cpu is not None:  # else its NUMA node's
        cell = next((c for i, c in enumerate(ctx.domain.cpu.numa) if (c.id if c.id is not None else i) == node),
                    None)
        access = access or (cell.attrs.get("memAccess") if cell is not None else None)
    access = access or _backing(ctx, "access")
    source = _backing(ctx, "source", "type")
    threads = _backing(ctx, "allocation", "threads")
    nvdimm_path = mem.source.get("path") if mem is not None and mem.model in ("nvdimm", "virtio-pmem") else None
    props: dict[str, Any] = {}
    if source == "memfd" and nvdimm_path is None:
        props = {"qom-type": "memory-backend-memfd", "id": alias}
        if pagesize:
            props.update({"hugetlb": True, "hugetlbsize": pagesize * 1024})
    elif pagesize or nvdimm_path or access or source == "file":
        props = {"qom-type": "memory-backend-file", "id": alias}
        if nvdimm_path:
            props["mem-path"] = nvdimm_path
        elif pagesize:
            mount = HUGETLBFS_MOUNTS.get(pagesize)
            if mount is None:
                raise UnsupportedByQemu(f"internal error: Unable to find any usable hugetlbfs mount for {pagesize} KiB",
                                        path=ctx.domain.source)
            props["mem-path"] = f"{mount}/libvirt/qemu/{short_name(ctx)}"
        else:
            # the file is named after the device (a memory device's own alias), else the back-end
            props["mem-path"] = f"{MEMORY_BACKING_DIR}/{short_name(ctx)}/{path_name or alias}"
    else:
        props = {"qom-type": "memory-backend-ram", "id": alias}
    file_like = props["qom-type"] != "memory-backend-ram"
    if discard is None and mem is not None:
        discard = mem.attrs.get("discard")
    if discard is None and ctx.domain.memory_backing is not None and \
            any(c.tag == "discard" for c in ctx.domain.memory_backing.children):
        discard = "yes"
    if file_like and discard in ("yes", "no"):
        props["discard-data"] = discard == "yes"
    if system and file_like and (ctx.json_object or
                                 ctx.caps.has("memory-backend-file.x-use-canonical-path-for-ramblock-id")):
        props["x-use-canonical-path-for-ramblock-id"] = False
    if access in ("shared", "private") and file_like:
        props["share"] = access == "shared"
    prealloc = _prealloc(ctx, pagesize, mem, nvdimm_path)
    if mem is not None and mem.model == "virtio-mem":
        # virtio-mem preallocates on the device (when QEMU can), never on its back-end
        prealloc = False
        if ctx.caps.has("memory-backend-file.reserve"):
            props["reserve"] = False
    elif prealloc:
        props["prealloc"] = True
        if threads:
            props["prealloc-threads"] = int(threads)
    props["size"] = size
    if mem is not None and mem.source.get("alignsize"):
        props["align"] = int(mem.source["alignsize"]) * 1024
    if mem is not None and mem.source_pmem:
        props["pmem"] = True
    out: list[dict[str, Any]] = []
    nodes = _host_nodes(ctx, node, mem)
    if nodes is not None:
        props["host-nodes"], props["policy"] = nodes
        affinity = _thread_affinity(ctx, nodes[0])
        if prealloc and affinity and ctx.caps.has("thread-context"):
            out.append({"qom-type": "thread-context", "id": f"tc-{alias}", "node-affinity": affinity})
            props["prealloc-context"] = f"tc-{alias}"
    out.append(props)
    return out
