"""A self-signed ECDSA P-256 certificate and its key, for the loopback self-test of ``scan tls``.

Before judging TLS 1.0/1.1, the scanner proves on 127.0.0.1 that this machine's OpenSSL can still
complete such a handshake with a certificate (SHA-1 handshake signatures included). Both ends of
that handshake are ours, the client never verifies the certificate, and nothing trusts it, so the
key is public on purpose: shipping it saves every scan the import of ``cryptography.x509`` and a
key generation (a third of a CI scan's start-up). Valid from 2000 to 9999.
"""

CERT_PEM = b"""\
-----BEGIN CERTIFICATE-----
MIIBTzCB9qADAgECAhQLdF8ZqJVIiw23ooDKhzfPlSanHzAKBggqhkjOPQQDAjAn
MSUwIwYDVQQDDBxzZW5kdmF1bHQgbG9vcGJhY2sgc2VsZi10ZXN0MCAXDTAwMDEw
MTAwMDAwMFoYDzk5OTkxMjMxMjM1OTU5WjAnMSUwIwYDVQQDDBxzZW5kdmF1bHQg
bG9vcGJhY2sgc2VsZi10ZXN0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEn2Pf
4Uwct0+jPLOrAmXReJf/8avvcze12eWA6FoiCTzOuGPG6JedfdP131MqqiSNg1Zh
5oJmPKsKKBzq1njhcDAKBggqhkjOPQQDAgNIADBFAiEAux/57ee3eoL/kZ06h92P
l+5AtPMth3WuI2P2LuB0BYkCIB5G0Ju6J20njdL80H8swRyq+gf8iqiY4d0XdaqI
Fga1
-----END CERTIFICATE-----
"""

KEY_PEM = b"""\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+6ejzqSTKBtIlY4m
0YMCrUHC1Zn/YstRvd/9tEr7/QShRANCAASfY9/hTBy3T6M8s6sCZdF4l//xq+9z
N7XZ5YDoWiIJPM64Y8bol5190/XfUyqqJI2DVmHmgmY8qwooHOrWeOFw
-----END PRIVATE KEY-----
"""
