# The architecture documentation (docs/architecture.md): its flow chart is drawn from code.
# Included by the Makefile.

.PHONY: docs

docs: $(VENV)/.installed  ## render docs/architecture.png from docs/architecture.py
	@command -v dot >/dev/null || { echo "error: Graphviz's dot not found; the diagrams package needs it (Debian/Ubuntu: apt-get install graphviz)"; exit 1; }
	$(BIN)/python docs/architecture.py docs/architecture.png
