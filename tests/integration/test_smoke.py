"""Smoke: round robin over two servers for HTTP and TCP, and the admin endpoints answer."""
import unittest

from harness import BallastTestCase, HttpBackend, parse_responses, raw_exchange, status, metrics


class Smoke(BallastTestCase):
    def test_http_round_robin_alternates(self):
        a, b = self.track(HttpBackend("a")), self.track(HttpBackend("b"))
        _, port, admin = self.start_ballast([a.address, b.address])
        names = []
        for _ in range(6):
            (st, _, body), = parse_responses(raw_exchange(
                port, b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
            self.assertEqual(st, 200)
            names.append(body.split()[0].decode())
        self.assertEqual(names.count("a"), 3, names)
        self.assertEqual(names.count("b"), 3, names)
        self.assertNotEqual(names[0], names[1])
        s = status(admin)
        self.assertEqual(s["virtual_services"][0]["requests"], 6)
        m = metrics(admin)
        self.assertEqual(m['ballast_vs_responses_total{vs="vs",class="2xx"}'], 6)

    def test_tcp_proxies_bytes(self):
        a = self.track(HttpBackend("a"))
        _, port, _ = self.start_ballast([a.address], protocol="tcp")
        (st, _, body), = parse_responses(raw_exchange(
            port, b"GET /t HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
        self.assertEqual((st, body), (200, b"a GET /t"))


if __name__ == "__main__":
    unittest.main()
