"""AES-256-CBC encryption (FIPS-197, PKCS#7 padding), enough to write a secret the way libvirt hands it to QEMU.

libvirt never passes a secret's value in clear: it encrypts it with the domain's master key and a random IV
(qemuDomainSecretAESSetup) and QEMU's ``secret`` object decrypts it. The argv builder reproduces libvirt's test
harness, whose master key and IV are fixed (harness.py), so the encrypted value is a pure function of the
plain text. Written from the standard so that the suite needs no cryptography package; slow, and only ever
used on a few short strings (tests/unit/test_storage_source.py checks it against the standard's vectors).
"""

from __future__ import annotations

from functools import lru_cache


def _xtime(a: int) -> int:
    a <<= 1
    return (a ^ 0x11B) if a & 0x100 else a


def _mul(a: int, b: int) -> int:
    out = 0
    while b:
        if b & 1:
            out ^= a
        a, b = _xtime(a), b >> 1
    return out


@lru_cache(maxsize=1)
def _sbox() -> tuple[int, ...]:
    """The S-box: the multiplicative inverse in GF(2^8), then the affine map."""
    box = []
    for x in range(256):
        inv = next((y for y in range(1, 256) if _mul(x, y) == 1), 0) if x else 0
        s = inv
        for shift in range(1, 5):
            s ^= ((inv << shift) | (inv >> (8 - shift))) & 0xFF
        box.append(s ^ 0x63)
    return tuple(box)


def _expand_key(key: bytes) -> list[list[int]]:
    """AES-256's 15 round keys of 16 bytes each."""
    sbox = _sbox()
    words = [list(key[i:i + 4]) for i in range(0, 32, 4)]
    rcon = 1
    for i in range(8, 60):
        w = list(words[i - 1])
        if i % 8 == 0:
            w = [sbox[b] for b in w[1:] + w[:1]]
            w[0] ^= rcon
            rcon = _xtime(rcon)
        elif i % 8 == 4:
            w = [sbox[b] for b in w]
        words.append([a ^ b for a, b in zip(words[i - 8], w, strict=True)])
    return [[b for w in words[r * 4:r * 4 + 4] for b in w] for r in range(15)]


def _encrypt_block(block: list[int], keys: list[list[int]]) -> list[int]:
    sbox = _sbox()
    s = [b ^ k for b, k in zip(block, keys[0], strict=True)]
    for rnd in range(1, 15):
        s = [sbox[b] for b in s]
        s = [s[(i + 4 * (i % 4)) % 16] for i in range(16)]  # shift row r (bytes i % 4 == r) left by r columns
        if rnd != 14:
            mixed = []
            for c in range(4):
                a = s[4 * c:4 * c + 4]
                mixed += [_xtime(a[i]) ^ (_xtime(a[(i + 1) % 4]) ^ a[(i + 1) % 4]) ^ a[(i + 2) % 4] ^ a[(i + 3) % 4]
                          for i in range(4)]
            s = mixed
        s = [b ^ k for b, k in zip(s, keys[rnd], strict=True)]
    return s


def encrypt_cbc(plain: bytes, key: bytes, iv: bytes) -> bytes:
    """AES-256-CBC of ``plain`` padded with PKCS#7 (what libvirt's virCryptoEncryptData writes)."""
    if len(key) != 32 or len(iv) != 16:
        raise ValueError("AES-256-CBC takes a 32-byte key and a 16-byte IV")
    pad = 16 - len(plain) % 16
    data = plain + bytes([pad]) * pad
    keys = _expand_key(key)
    prev = list(iv)
    out = bytearray()
    for i in range(0, len(data), 16):
        prev = _encrypt_block([b ^ p for b, p in zip(data[i:i + 16], prev, strict=True)], keys)
        out += bytes(prev)
    return bytes(out)
