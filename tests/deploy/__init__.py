"""Tests of getting crackd onto a device: deploy over SSH, bundle
signing, the installer and its runtime choice, the wheel."""
