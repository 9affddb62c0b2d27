# qtk — quantization toolkit. `make` builds build/libqtk.{a,so} and build/qtk.
#   make test      build and run every test (installs -dev packages if missing)
#   make check     the same suite with -fsanitize=address,undefined
#   make demo      convert the bundled stories260K checkpoint and show it
#   make bench     benchmarks (not timed tests; T=quant|convert|peer|peer-kernels|lm|...)
#   make fuzz      libFuzzer targets (clang), FUZZ_SECONDS each
#   make install PREFIX=/usr/local
#   make CC=clang  builds with clang instead of gcc

CC ?= cc
PREFIX ?= /usr/local
B ?= build
MULTIARCH := $(or $(shell $(CC) -print-multiarch 2>/dev/null),x86_64-linux-gnu)
FUZZ_SECONDS ?= 60
# tests and builds run side by side on every core (JOBS=1 for one at a time)
JOBS ?= $(shell nproc 2>/dev/null || echo 1)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wpointer-arith -Wformat=2 -Wvla -Wundef -Wcast-qual -Wwrite-strings \
        -Wnull-dereference -Wdouble-promotion -Wno-unused-parameter
OPT ?= -O2 -g
SAN ?=
CPPFLAGS += -D_GNU_SOURCE
BLAS_INC := -I/usr/include/$(MULTIARCH)/openblas-pthread
# Each part sees only the headers it may include (docs/architecture.md):
# quant -> nothing; formats -> quant; runtime -> formats, quant; convert and
# the tests -> everything. A forbidden #include fails to build; `make
# boundaries` (run by `make test`) proves it.
INC_quant   := -Iquant
INC_formats := -Iformats -Iquant
INC_runtime := -Iruntime -Iformats -Iquant $(BLAS_INC)
INC_convert := -Iconvert -Iruntime -Iformats -Iquant $(BLAS_INC)
INC_tests   := -Itests -Iconvert -Iruntime -Iformats -Iquant $(BLAS_INC)
part_inc = $(INC_$(firstword $(subst /, ,$(1))))
CFLAGS_ALL = -std=c11 $(OPT) $(WARN) $(SAN) -fPIC -fvisibility=hidden -pthread \
             -MMD -MP $(CFLAGS)
LDLIBS_ALL = -ljansson -lzstd -lz -lopenblas -lpthread -lm $(LDLIBS)

LIB_SRC  := $(wildcard quant/*.c formats/*.c runtime/*.c) \
            $(filter-out convert/main.c convert/cmd_%.c convert/cli_%.c,$(wildcard convert/*.c))
CLI_SRC  := convert/main.c $(wildcard convert/cmd_*.c convert/cli_*.c)
TEST_SRC := $(wildcard tests/*.c)
BENCH_SRC := $(wildcard tests/bench/*.c)
FUZZ_HARNESS := $(wildcard tests/fuzz/fuzz_*.c)

LIB_OBJ  := $(LIB_SRC:%.c=$(B)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(B)/obj/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(B)/obj/%.o) $(FUZZ_HARNESS:%.c=$(B)/obj/%.o)
BENCH_OBJ := $(BENCH_SRC:%.c=$(B)/obj/%.o)

.PHONY: all deps test check demo bench fuzz install clean lib boundaries
all: deps $(B)/qtk $(B)/libqtk.so
lib: $(B)/libqtk.a $(B)/libqtk.so

# Install the four -dev packages when a header is missing (Debian).
deps:
	@sh scripts/deps.sh

# Rebuild everything when the compiler or flags change.
$(B)/.flags: FORCE
	@mkdir -p $(B)
	@echo '$(CC) $(CPPFLAGS) $(INC_tests) $(CFLAGS_ALL)' | cmp -s - $@ || echo '$(CC) $(CPPFLAGS) $(INC_tests) $(CFLAGS_ALL)' > $@
FORCE:

$(B)/obj/%.o: %.c $(B)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(call part_inc,$<) $(CFLAGS_ALL) -c $< -o $@

# The include boundaries hold: in each part's context the public header of
# a part it may not use is not found, and one it may use is (so the check
# is not vacuous). Run by `make test`.
boundaries:
	@ok=1; \
	chk() { printf '#include "%s"\nint qtk_boundary_probe;\n' "$$3" | \
	  $(CC) $(CPPFLAGS) $$2 -std=c11 -fsyntax-only -x c - >/dev/null 2>&1; r=$$?; \
	  if [ "$$4" = deny ] && [ $$r -eq 0 ]; then echo "boundaries: $$1 may include $$3 but must not"; ok=0; fi; \
	  if [ "$$4" = allow ] && [ $$r -ne 0 ]; then echo "boundaries: $$1 cannot include $$3"; ok=0; fi; }; \
	chk quant '$(INC_quant)' qtk_formats.h deny; chk quant '$(INC_quant)' qtk_quant.h allow; \
	chk formats '$(INC_formats)' qtk_runtime.h deny; chk formats '$(INC_formats)' qtk_convert.h deny; \
	chk formats '$(INC_formats)' qtk_formats.h allow; \
	chk runtime '$(INC_runtime)' qtk_convert.h deny; chk runtime '$(INC_runtime)' qtk_runtime.h allow; \
	chk convert '$(INC_convert)' qtk_convert.h allow; chk convert '$(INC_convert)' qtk_runtime.h allow; \
	[ $$ok = 1 ] && echo "boundaries: quant, formats, runtime and convert see only what they may include"

$(B)/libqtk.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/libqtk.so: $(LIB_OBJ)
	$(CC) -shared $(SAN) -pthread -o $@ $^ $(LDLIBS_ALL)

$(B)/qtk: $(CLI_OBJ) $(B)/libqtk.a
	$(CC) $(SAN) -pthread -o $@ $(CLI_OBJ) $(B)/libqtk.a $(LDLIBS_ALL)

$(B)/qtk_tests: $(TEST_OBJ) $(B)/libqtk.a $(B)/qtk
	$(CC) $(SAN) -pthread -o $@ $(TEST_OBJ) $(B)/libqtk.a $(LDLIBS_ALL)

$(B)/qtk_bench: $(BENCH_OBJ) $(B)/libqtk.a $(B)/qtk $(B)/qtk_gen
	$(CC) $(SAN) -pthread -o $@ $(BENCH_OBJ) $(B)/libqtk.a $(LDLIBS_ALL)

# checkpoint generator for benchmarks (tests/gen.c is shared with the tests)
$(B)/qtk_gen: $(B)/obj/tests/tools/qtk_gen.o $(B)/obj/tests/gen.o $(B)/libqtk.a
	$(CC) $(SAN) -pthread -o $@ $^ $(LDLIBS_ALL)

test: deps boundaries
	@$(MAKE) --no-print-directory -j$(JOBS) $(B)/qtk_tests
	@QTK_BIN=$(B)/qtk $(B)/qtk_tests -j$(JOBS) $(T)

check: deps
	@$(MAKE) --no-print-directory -j$(JOBS) B=build/san OPT='-O1 -g -fno-omit-frame-pointer' \
	  SAN='-fsanitize=address,undefined -fno-sanitize-recover=undefined' build/san/qtk_tests
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  QTK_SANITIZED=1 QTK_BIN=build/san/qtk build/san/qtk_tests -j$(JOBS) $(T)

demo: deps
	@$(MAKE) --no-print-directory $(B)/qtk
	@sh scripts/demo.sh $(B)/qtk

bench: deps
	@$(MAKE) --no-print-directory $(B)/qtk_bench $(B)/qtk
	@QTK_BIN=$(B)/qtk QTK_GEN=$(B)/qtk_gen $(B)/qtk_bench $(T)
	@if [ -z "$(T)" ] || [ "$(T)" = convert ]; then \
	  QTK_BIN=$(B)/qtk QTK_GEN=$(B)/qtk_gen sh scripts/bench_convert.sh; fi
	@if [ -z "$(T)" ] || [ "$(T)" = peer ]; then \
	  QTK_BIN=$(B)/qtk QTK_GEN=$(B)/qtk_gen sh scripts/bench_peer.sh; fi
	@if [ -z "$(T)" ] || [ "$(T)" = peer-kernels ]; then \
	  QTK_BIN=$(B)/qtk sh scripts/bench_peer_kernels.sh; fi
	@if [ -z "$(T)" ] || [ "$(T)" = lm ]; then \
	  QTK_BIN=$(B)/qtk QTK_GEN=$(B)/qtk_gen sh scripts/bench_lm.sh; fi

fuzz: deps
	@sh scripts/fuzz.sh $(FUZZ_SECONDS)

install: all $(B)/libqtk.a
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/qtk
	install -m 755 $(B)/qtk $(DESTDIR)$(PREFIX)/bin/qtk
	install -m 644 $(B)/libqtk.a $(DESTDIR)$(PREFIX)/lib/libqtk.a
	install -m 755 $(B)/libqtk.so $(DESTDIR)$(PREFIX)/lib/libqtk.so
	install -m 644 quant/qtk_quant.h formats/qtk_formats.h runtime/qtk_runtime.h \
	  convert/qtk_convert.h $(DESTDIR)$(PREFIX)/include/qtk/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|'`sed -n 's/^#define QTK_VERSION "\(.*\)"/\1/p' quant/qtk_quant.h`'|' \
	  scripts/qtk.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/qtk.pc

clean:
	rm -rf build

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
