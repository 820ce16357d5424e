"""host_of: the one host parser (per-host download limits and takedown by domain)."""
import pytest

from openwit.pipeline.common.urls import domain_host, host_of


@pytest.mark.parametrize("url, host", [
    ("http://Example.COM./a.jpg", "example.com"),  # case and the trailing dot do not make a new host
    ("https://user:pw@img.example.com:8443/x", "img.example.com"),
    ("http://Bücher.example/x", "xn--bcher-kva.example"),  # the name that is resolved
    ("http://xn--bcher-kva.example/x", "xn--bcher-kva.example"),
    ("http://[2001:DB8::1]:80/a", "2001:db8::1"),
    ("http://evil.example\\@good.example/", ""),  # aiohttp refuses it: never downloaded from either
    ("http://[::1", ""),
    ("not a url", ""),
    ("", ""),
    (None, ""),
])
def test_host_of(url, host):
    assert host_of(url) == host


def test_a_takedown_domain_compares_with_url_hosts():
    assert domain_host("Bücher.Example.") == host_of("http://bücher.example/x.jpg") == "xn--bcher-kva.example"
    assert domain_host(" EXAMPLE.com ") == "example.com"
