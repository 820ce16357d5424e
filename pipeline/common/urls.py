"""The two ways openwit reads a URL: the host it names, and its normalised form.

`host_of` is the one host parser. The downloader keys its per-host limits on it and
takedown matches domains with it, so both must see the host the download actually
connected to: the URL is parsed the way aiohttp parses it (yarl), and the host is the
name that is resolved (ASCII, IDNA-encoded, lower-case), without a trailing dot.

`normalize_url` is the form under which two URLs fetch the same resource: URL dedup keys
on it, and takedown and the audit summary match requested URLs with it.
"""
from __future__ import annotations

import re
import string
from urllib.parse import quote, urlsplit, urlunsplit

from yarl import URL


SCHEMES = ("http", "https")  # what openwit downloads: read drops others, redirects to others are refused


def host_of(url) -> str:
    """The host `url` connects to: "bücher.example" and "XN--BCHER-KVA.example." are both
    "xn--bcher-kva.example"; "" for a URL that does not parse (it is never downloaded)."""
    try:
        return (URL(url).raw_host or "").lower().rstrip(".")
    except (ValueError, TypeError):
        return ""


def domain_host(domain: str) -> str:
    """A domain as written in a request ("Bücher.Example.") in host_of's form, so that it
    compares with the hosts of URLs."""
    domain = domain.strip()
    return host_of(f"http://{domain}/") or domain.lower().rstrip(".")


_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 3986: a percent-escape of an unreserved character means the character itself (%41 is
# A); other escapes are meaningful (%2F is not /) and only their hex case is normalised.
_UNRESERVED = set(string.ascii_letters + string.digits + "-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_SAFE_PATH = "/:@!$&'()*+,;=-._~%"
_SAFE_QUERY = _SAFE_PATH + "?"


def _canonical_escapes(text: str, safe: str) -> str:
    def one(match):
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return quote(_ESCAPE.sub(one, text), safe=safe)  # raw non-ASCII -> UTF-8 escapes


def normalize_url(url: str) -> str:
    """The form under which two URLs fetch the same resource: scheme and host lower-case,
    default port and fragment removed, dot segments resolved, percent-encoding made
    canonical. The query is kept as it is, order included: servers may read it in order.
    A URL that does not parse is returned as it is (the downloader reports it)."""
    try:
        return _normalize(url.strip())
    except ValueError:
        return url.strip()


# host[:port] after any userinfo: a bracketed IPv6 literal, or a host without brackets.
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\[\]:]*)(:\d*)?$")


def _normalize(url: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not _HOST_PORT.match(parts.netloc.rpartition("@")[2]):
        raise ValueError("malformed host")  # e.g. "junk[::1]": never merge it with a real host
    host = (parts.hostname or "").rstrip(".")
    if ":" in host:
        host = f"[{host}]"  # IPv6 keeps its brackets, or its colons would read as a port
    port = parts.port  # ValueError for a bad port
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    if parts.username or parts.password:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    path = remove_dot_segments(parts.path or "/")
    path = _canonical_escapes(path, _SAFE_PATH)
    query = _canonical_escapes(parts.query, _SAFE_QUERY) if parts.query else ""
    return urlunsplit((scheme, netloc, path, query, ""))


def remove_dot_segments(path: str) -> str:
    """Resolve "." and ".." path segments (RFC 3986 5.2.4); empty segments ("a//b") stay:
    servers may treat them differently."""
    segments, out = path.split("/"), []
    for i, segment in enumerate(segments):
        if segment in (".", ".."):
            if segment == ".." and len(out) > 1:
                out.pop()
            if i == len(segments) - 1:
                out.append("")  # "/a/." names the directory: keep its trailing slash
            continue
        out.append(segment)
    return "/".join(out) or "/"


def without_credentials(url: str) -> str:
    """`url` without a user name and password: what the ledger records of a credentials_in_url
    candidate, so the secret is never published (an unparseable url stays as it is)."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return url
    if parsed.raw_user is None and parsed.raw_password is None:
        return url
    # cut the text itself, so the rest of the url stays byte for byte as the input had it
    scheme, _, rest = url.partition("://")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    clean = f"{scheme}://{rest[:end].rpartition('@')[2]}{rest[end:]}"
    try:
        if URL(clean).raw_user is None and URL(clean).raw_password is None:
            return clean
    except (ValueError, TypeError):
        pass
    return str(parsed.with_user(None))  # yarl saw the authority otherwise: its own rendering
