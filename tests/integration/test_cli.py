"""The command line: --version, --help, usage errors (exit 2, message on stderr)."""
import re
import unittest

from harness import run_ballast

VERSION_LINE = re.compile(r"^ballast \d+\.\d+\.\d+\S*$")


class Cli(unittest.TestCase):
    def test_version(self):
        rc, out, err = run_ballast("--version")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out.strip(), VERSION_LINE)

    def test_se_version_is_the_same(self):
        rc, out, err = run_ballast("se", "--version")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out.strip(), VERSION_LINE)
        self.assertEqual(out, run_ballast("--version")[1])

    def test_help_mentions_se(self):
        for args in (["--help"], ["-h"]):
            rc, out, err = run_ballast(*args)
            self.assertEqual(rc, 0, err)
            self.assertRegex(out, r"(?m)^\s*se\b", out)

    def test_se_help(self):
        rc, out, err = run_ballast("se", "--help")
        self.assertEqual(rc, 0, err)
        self.assertIn("--config", out)
        self.assertIn("--check-config", out)

    def assertUsageError(self, *args, mentions=None):
        rc, out, err = run_ballast(*args)
        self.assertEqual(rc, 2, f"{args}: stdout={out!r} stderr={err!r}")
        self.assertTrue(err.strip(), f"{args}: no message on stderr (stdout={out!r})")
        if mentions:
            self.assertIn(mentions, err)
        return err

    def test_no_subcommand(self):
        self.assertUsageError()

    def test_unknown_option(self):
        self.assertUsageError("--bogus")

    def test_unknown_subcommand(self):
        self.assertUsageError("frobnicate")

    # The message should name what is wrong: "A subcommand is required" for a mistyped option
    # or subcommand sends the operator looking in the wrong place.
    def test_unknown_option_is_named(self):
        self.assertUsageError("--bogus", mentions="--bogus")

    def test_unknown_subcommand_is_named(self):
        self.assertUsageError("frobnicate", mentions="frobnicate")

    def test_se_unknown_option(self):
        self.assertUsageError("se", "--bogus", mentions="--bogus")

    def test_se_without_config(self):
        self.assertUsageError("se")

    def test_se_config_without_argument(self):
        self.assertUsageError("se", "--config")

    def test_se_config_and_check_config_together(self):
        self.assertUsageError("se", "--config", "a.yaml", "--check-config", "b.yaml")


if __name__ == "__main__":
    unittest.main()
