# qtk — quantization toolkit. `make` builds build/libqtk.{a,so} and build/qtk.
#   make test      build and run every test (installs -dev packages if missing)
#   make check     the same suite with -fsanitize=address,undefined
#   make demo      convert the bundled stories260K checkpoint and show it
#   make bench     benchmarks (not timed tests; T=quant|convert|peer|peer-kernels|...)
#   make fuzz      libFuzzer targets (clang), FUZZ_SECONDS each
#   make install PREFIX=/usr/local
#   make CC=clang  builds with clang instead of gcc

CC ?= cc
PREFIX ?= /usr/local
B ?= build
MULTIARCH := $(or $(shell $(CC) -print-multiarch 2>/dev/null),x86_64-linux-gnu)
FUZZ_SECONDS ?= 60

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wpointer-arith -Wformat=2 -Wvla -Wundef -Wcast-qual -Wwrite-strings \
        -Wnull-dereference -Wdouble-promotion -Wno-unused-parameter
OPT ?= -O2 -g
SAN ?=
CPPFLAGS += -D_GNU_SOURCE -Iquant -Iformats -Iruntime -Iconvert \
            -I/usr/include/$(MULTIARCH)/openblas-pthread
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

.PHONY: all deps test check demo bench fuzz install clean lib
all: deps $(B)/qtk $(B)/libqtk.so
lib: $(B)/libqtk.a $(B)/libqtk.so

# Install the four -dev packages when a header is missing (Debian).
deps:
	@sh scripts/deps.sh

# Rebuild everything when the compiler or flags change.
$(B)/.flags: FORCE
	@mkdir -p $(B)
	@echo '$(CC) $(CPPFLAGS) $(CFLAGS_ALL)' | cmp -s - $@ || echo '$(CC) $(CPPFLAGS) $(CFLAGS_ALL)' > $@
FORCE:

$(B)/obj/%.o: %.c $(B)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS_ALL) -c $< -o $@

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

test: deps
	@$(MAKE) --no-print-directory $(B)/qtk_tests
	@QTK_BIN=$(B)/qtk $(B)/qtk_tests $(T)

check: deps
	@$(MAKE) --no-print-directory B=build/san OPT='-O1 -g -fno-omit-frame-pointer' \
	  SAN='-fsanitize=address,undefined -fno-sanitize-recover=undefined' build/san/qtk_tests
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  QTK_SANITIZED=1 QTK_BIN=build/san/qtk build/san/qtk_tests $(T)

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
