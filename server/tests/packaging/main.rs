//! The packages, built and started for real: the container image (one node, a cluster of three
//! on a private Docker network), the TrueNAS app rendered and started, the Unraid template's
//! `docker run` line and plugin scripts, and the Debian package installed, upgraded, removed
//! and purged in a debootstrap chroot and in a container (docs/install.md).
//!
//! They need a Docker engine that answers (each test checks and fails clearly if not) and run
//! as root (debootstrap, chroot). The binary they ship is `packaging/build-binary.sh`'s
//! release build, which tests/run-all.sh makes before the tests.

mod container;
mod deb;
mod support;
mod truenas;
mod unraid;
