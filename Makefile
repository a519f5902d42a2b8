# Install sdoverlay for the distribution's own Python 3 (Debian layout):
#   make install DESTDIR=/some/root
# Runtime dependencies (Debian packages): python3, python3-click,
# python3-dbus-next, python3-systemd, util-linux, dbus, polkitd.

DESTDIR ?=
PREFIX ?= /usr
PYTHON_SITE ?= $(PREFIX)/lib/python3/dist-packages
GENERATOR_DIR ?= $(PREFIX)/lib/systemd/system-generators
CATALOG_DIR ?= $(PREFIX)/lib/systemd/catalog
DOC_DIR ?= $(PREFIX)/share/doc/sdoverlay
MAN1_DIR ?= $(PREFIX)/share/man/man1
MAN5_DIR ?= $(PREFIX)/share/man/man5
MAN8_DIR ?= $(PREFIX)/share/man/man8
UNIT_DIR ?= $(PREFIX)/lib/systemd/system
DBUS_SERVICES_DIR ?= $(PREFIX)/share/dbus-1/system-services
DBUS_POLICY_DIR ?= $(PREFIX)/share/dbus-1/system.d
POLKIT_ACTIONS_DIR ?= $(PREFIX)/share/polkit-1/actions
BASH_COMPLETION_DIR ?= $(PREFIX)/share/bash-completion/completions
ZSH_COMPLETION_DIR ?= $(PREFIX)/share/zsh/vendor-completions
FISH_COMPLETION_DIR ?= $(PREFIX)/share/fish/vendor_completions.d
PYTHON ?= /usr/bin/python3
# install-python byte-compiles the package with $(PYTHON). Set it to no
# where $(PYTHON) is not the Python of the system installed for, and
# compile the package there.
BYTE_COMPILE ?= yes
# click writes each shell's completion script, which asks sdoverlay itself
# (_SDOVERLAY_COMPLETE=...) for verbs, options and overlay names on Tab.
COMPLETE = _SDOVERLAY_COMPLETE=$(1)_source PYTHONPATH=. $(PYTHON) -m sdoverlay

PACKAGE_FILES := $(wildcard sdoverlay/*.py sdoverlay/help.txt sdoverlay/units/*.py sdoverlay/units/*.mount sdoverlay/units/*.service)

.PHONY: install install-python install-system check-python-site help

# `sdoverlay --help`, pre-rendered from click (sdoverlay/entry.py says why);
# run after changing a verb or option (tests/test_docs.py fails until then).
help:
	PYTHONPATH=. $(PYTHON) -c 'from sdoverlay.cli import top_level_help; print(top_level_help(), end="")' > sdoverlay/help.txt

install: install-python install-system

# The CLI, the service and the content unit run `$(PYTHON) -I` and find the
# package on its default path (only the generator is told where it is), so
# PYTHON_SITE must be on that path. Debian's python3 has
# /usr/lib/python3/dist-packages there, but for PREFIX=/usr/local it has
# /usr/local/lib/python3.X/dist-packages, not .../python3/dist-packages: an
# install there would give commands that cannot import sdoverlay. Checked
# first, before anything is installed; only where $(PYTHON) is the Python
# of the system installed for (BYTE_COMPILE=yes, below).
check-python-site:
	@$(PYTHON) -I -c 'import sys; sys.exit(0 if "$(PYTHON_SITE)" in sys.path else "make: PYTHON_SITE=$(PYTHON_SITE) is not on the path of $(PYTHON) -I, where sdoverlay'"'"'s commands look for it; set PYTHON_SITE to a dir that is")'

ifeq ($(BYTE_COMPILE),yes)
install-python install-system: check-python-site
endif

# The Python package (the Debian package has pybuild install it instead).
# Byte-compiled as installed: on an image's read-only /usr Python cannot
# write .pyc files later, and without them the generator compiles its
# modules on every boot and daemon-reload (25.6 ms against 15.2 ms, 2.6x
# `python3 -I -c pass` against 1.6x) and so does every command (issue 9).
# checked-hash: a .pyc is checked against its source's contents, not its
# mtime, which image builds are free to reset.
install-python:
	for file in $(PACKAGE_FILES); do \
		install -D -m 0644 "$$file" "$(DESTDIR)$(PYTHON_SITE)/$$file"; \
	done
ifeq ($(BYTE_COMPILE),yes)
	$(PYTHON) -m compileall -q --invalidation-mode checked-hash -d "$(PYTHON_SITE)/sdoverlay" \
		"$(DESTDIR)$(PYTHON_SITE)/sdoverlay"
endif

# Everything else a system needs: commands, units, D-Bus and polkit files,
# the catalog, man pages, completions.
install-system:
	install -D -m 0755 systemd/sdoverlay "$(DESTDIR)$(PREFIX)/bin/sdoverlay"
	install -d -m 0755 "$(DESTDIR)$(GENERATOR_DIR)"
	sed 's|@PYTHON_SITE@|$(PYTHON_SITE)|' systemd/sdoverlay-generator.in > "$(DESTDIR)$(GENERATOR_DIR)/sdoverlay-generator"
	chmod 0755 "$(DESTDIR)$(GENERATOR_DIR)/sdoverlay-generator"
	install -D -m 0644 systemd/sdoverlay.catalog "$(DESTDIR)$(CATALOG_DIR)/sdoverlay.catalog"
	install -D -m 0644 systemd/sdoverlay-polkit.rules "$(DESTDIR)$(DOC_DIR)/examples/50-sdoverlay.rules"
	install -D -m 0644 man/sdoverlay.1 "$(DESTDIR)$(MAN1_DIR)/sdoverlay.1"
	install -D -m 0644 man/sdoverlay.d.5 "$(DESTDIR)$(MAN5_DIR)/sdoverlay.d.5"
	install -D -m 0644 man/sdoverlay.conf.5 "$(DESTDIR)$(MAN5_DIR)/sdoverlay.conf.5"
	install -D -m 0644 man/sdoverlay.service.8 "$(DESTDIR)$(MAN8_DIR)/sdoverlay.service.8"
	install -d -m 0755 "$(DESTDIR)$(PREFIX)/lib/sdoverlay.d"
	install -d -m 0755 "$(DESTDIR)$(UNIT_DIR)"
	sed 's|@PYTHON@|$(PYTHON)|' systemd/sdoverlay.service.in > "$(DESTDIR)$(UNIT_DIR)/sdoverlay.service"
	install -D -m 0644 systemd/org.sdoverlay.Overlays1.service "$(DESTDIR)$(DBUS_SERVICES_DIR)/org.sdoverlay.Overlays1.service"
	install -D -m 0644 systemd/org.sdoverlay.Overlays1.conf "$(DESTDIR)$(DBUS_POLICY_DIR)/org.sdoverlay.Overlays1.conf"
	install -D -m 0644 systemd/org.sdoverlay.policy "$(DESTDIR)$(POLKIT_ACTIONS_DIR)/org.sdoverlay.policy"
	install -d -m 0755 "$(DESTDIR)$(BASH_COMPLETION_DIR)" "$(DESTDIR)$(ZSH_COMPLETION_DIR)" "$(DESTDIR)$(FISH_COMPLETION_DIR)"
	$(call COMPLETE,bash) > "$(DESTDIR)$(BASH_COMPLETION_DIR)/sdoverlay"
	$(call COMPLETE,zsh) > "$(DESTDIR)$(ZSH_COMPLETION_DIR)/_sdoverlay"
	$(call COMPLETE,fish) > "$(DESTDIR)$(FISH_COMPLETION_DIR)/sdoverlay.fish"
