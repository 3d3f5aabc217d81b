# Two commands on a fresh machine: `make run` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
export CMAKE_ARGS

.PHONY: run test setup setup-test setup-package lint bench screenshots package package-test \
	deb-install-test clean

run: setup
	$(PY) -m workbench

test: setup-test
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

setup:
	@VENV=$(VENV) bash tools/bootstrap.sh app

setup-test:
	@VENV=$(VENV) bash tools/bootstrap.sh test

# Installers run on other people's CPUs, so they get a llama.cpp built for a portable
# baseline (GGML_NATIVE=OFF: x86-64 with AVX2/FMA/F16C, no -march=native) in a venv of its
# own with PyInstaller; the development .venv keeps its native build. GPU flavors add
# their flags: CMAKE_ARGS="-DGGML_CUDA=on" make package.
PKG_VENV := build/package-venv
setup-package:
	@VENV=$(PKG_VENV) CMAKE_ARGS="-DGGML_NATIVE=OFF $(CMAKE_ARGS)" WORKBENCH_EXTRAS=package \
		bash tools/bootstrap.sh app

lint: setup-test
	$(PY) -m ruff check workbench tests

bench: setup
	$(PY) -m workbench.bench throughput
	$(PY) -m workbench.bench turns
	$(PY) -m workbench.bench stop
	$(PY) -m workbench.bench fit
	$(PY) -m workbench.bench download
	$(PY) -m workbench.bench faults
	$(PY) -m workbench.bench gui

screenshots: setup-test
	QT_QPA_PLATFORM=offscreen $(PY) -m workbench.ui.screenshots docs

# Linux installers: dist/workbench/ (bundle), dist/*.deb, dist/Workbench.AppDir (and an
# AppImage where appimagetool is present). Windows and macOS: packaging/README.md.
package: setup-package
	PYTHON=$(PKG_VENV)/bin/python bash packaging/linux/build.sh

# Builds them, then runs the frozen app's --self-test from each with a clean environment
# and checks every bundled ELF file's dependencies with ldd.
package-test: package
	bash packaging/linux/smoke_test.sh

# The .deb that `make package` built, installed with apt on a clean Debian 12
# (debootstrap; needs root and Debian's mirror), then the installed app's --self-test and
# its removal. It does not rebuild the .deb: run it after `make package` (or package-test).
deb-install-test:
	bash packaging/linux/install_test.sh

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
