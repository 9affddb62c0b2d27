/* tests: what qtk does with the paths it is given (issue 15). Outputs: only
 * a regular file (or, for MLX, an empty directory or a previous MLX output)
 * is ever replaced, even with --force; a FIFO, socket, device, symbolic link
 * or foreign directory is refused and left as it was, at open and again at
 * commit. Inputs: a FIFO (or socket, directory) anywhere qtk reads — the
 * input, an index's shard, config.json, tokenizer files, a recipe — fails
 * at once naming it instead of blocking. Names: a 255-byte output name
 * works (the temporary's name has a fixed length), 256 gets ENAMETOOLONG.
 * Every CLI run is under timeout(1), and the in-process readers under
 * alarm(), so a regression that blocks fails instead of hanging the suite. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qtk_formats.h"
#include "test.h"

#define RUN_TIMEOUT 20 /* seconds for one CLI run; they take milliseconds */

static const char *bin(void)
{
	const char *b = getenv("QTK_BIN");

	if (!b || !*b)
		SKIP("QTK_BIN not set (run through make test)");
	return b;
}

/* t_tmpdir()/rel in a ring of 64 (t_tmp's ring of 8 is shared with t_data
 * and too short for the paths these tests hold). */
static const char *tp(const char *rel)
{
	static char buf[64][4600];
	static unsigned k;
	char *p = buf[k++ & 63];

	snprintf(p, sizeof buf[0], "%s/%s", t_tmpdir(), rel);
	return p;
}

static const char *stories(void)
{
	static char p[4200];

	if (!*p)
		snprintf(p, sizeof p, "%s", t_data("stories260K/model.safetensors"));
	return p;
}

/* Where qtk()'s stderr goes: t_tmpdir()/err. */
static const char *err_path(void)
{
	static char p[4600];

	snprintf(p, sizeof p, "%s/err", t_tmpdir());
	return p;
}

/* Run `qtk ARGS` (stdout dropped, stderr to err_path()); its exit status,
 * 137 if it had to be killed. */
__attribute__((format(printf, 1, 2)))
static int qtk(const char *fmt, ...)
{
	char args[6000];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(args, sizeof args, fmt, ap);
	va_end(ap);
	return t_system("timeout -s KILL %d %s %s >/dev/null 2>%s", RUN_TIMEOUT, bin(), args,
	                err_path());
}

/* Does the last run's stderr hold all of the (NULL-ended) needles? */
static int err_has(const char *needle, ...)
{
	char *msg = t_read_file(err_path(), NULL);
	int yes = msg != NULL;
	va_list ap;

	va_start(ap, needle);
	for (const char *n = needle; n && yes; n = va_arg(ap, const char *))
		yes = strstr(msg, n) != NULL;
	va_end(ap);
	if (!yes)
		printf("    stderr: %s\n", msg ? msg : "(none)");
	free(msg);
	return yes;
}

static mode_t ltype(const char *path)
{
	struct stat sb;

	return lstat(path, &sb) == 0 ? sb.st_mode & S_IFMT : 0;
}

static int make_socket(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0), rc;

	if (fd < 0 || strlen(path) >= sizeof a.sun_path)
		return -1;
	memcpy(a.sun_path, path, strlen(path) + 1);
	rc = bind(fd, (const struct sockaddr *)&a, sizeof a);
	close(fd); /* the socket file stays */
	return rc;
}

/* A small .qtk file of stories260K at tp("m.qtk"). */
static int make_qtk(void)
{
	return qtk("convert %s -o %s --scheme int8 --group 32 -q", stories(), tp("m.qtk"));
}

/* ---- 1. outputs that are not regular files ------------------------------ */

/* Every command that writes a file or directory, run with --force. */
static const struct {
	const char *cmd, *opts;
	int from_qtk;   /* its input is tp("m.qtk"), else stories260K */
	int positional; /* CMD OPTS IN OUT, else CMD IN -o OUT OPTS */
} writers[] = {
	{ "convert", "--scheme int8 --group 32 -q --force", 0, 0 },
	{ "convert", "--scheme int4 --group 32 -q --force -F gguf", 0, 0 },
	{ "convert", "--scheme int4 --group 32 -q --force -F mlx", 0, 0 },
	{ "export", "--to gguf -q --force --requantize", 1, 0 },
	{ "export", "--to mlx -q --force --requantize", 1, 0 },
	{ "pack", "--zstd --force", 1, 1 },
	{ "unpack", "--force", 1, 1 },
};
#define NWRITERS (sizeof writers / sizeof *writers)

/* Run writer k with out as its output. */
static int run_writer(size_t k, const char *out)
{
	const char *in = writers[k].from_qtk ? tp("m.qtk") : stories();

	if (writers[k].positional)
		return qtk("%s %s %s %s", writers[k].cmd, writers[k].opts, in, out);
	return qtk("%s %s -o %s %s", writers[k].cmd, in, out, writers[k].opts);
}

/* Each writer with --force at node (of type want) fails naming phrase, and
 * leaves node, and the directory, as they were. */
static void writers_refuse(const char *node, mode_t want, const char *phrase)
{
	int before = t_dir_entries(t_tmpdir());

	for (size_t k = 0; k < NWRITERS; k++) {
		CHECK_MSG(run_writer(k, node) == 1, "%s %s -> %s: not refused", writers[k].cmd,
		          writers[k].opts, node);
		CHECK_MSG(err_has(node, phrase, "not replaced", NULL), "%s: message", writers[k].cmd);
		CHECK_MSG(ltype(node) == want, "%s: %s is no longer what it was", writers[k].cmd,
		          node);
		CHECK_EQ(t_dir_entries(t_tmpdir()), before);
	}
}

TEST(paths_output_fifo_socket_device_refused_with_force)
{
	const char *fifo = tp("out.fifo"), *sock = tp("out.sock");

	bin();
	REQUIRE(make_qtk() == 0);
	REQUIRE(mkfifo(fifo, 0644) == 0);
	REQUIRE(make_socket(sock) == 0);
	t_write_file(err_path(), "", 0); /* counted as an entry from now on */
	writers_refuse(fifo, S_IFIFO, "is a FIFO");
	writers_refuse(sock, S_IFSOCK, "is a socket");
	if (geteuid() == 0) {
		/* root: device nodes of our own in the temporary directory (a node
		 * like /dev/null's, so a regression replaces only this node and
		 * never /dev/null itself, which root could) */
		const char *cdev = tp("null.cdev"), *bdev = tp("loop.bdev");

		if (mknod(cdev, S_IFCHR | 0666, makedev(1, 3)) != 0 ||
		    mknod(bdev, S_IFBLK | 0600, makedev(7, 0)) != 0) {
			printf("    mknod: %s; device nodes not tested\n", strerror(errno));
			return;
		}
		writers_refuse(cdev, S_IFCHR, "is a character device");
		writers_refuse(bdev, S_IFBLK, "is a block device");
	} else {
		/* not root: /dev itself, which a regression could not write to */
		writers_refuse("/dev/null", S_IFCHR, "is a character device");
	}
}

TEST(paths_output_symlink_refused)
{
	const char *real = tp("real.qtk"), *link = tp("link.qtk");
	const char *dangling = tp("dangling.qtk"), *devnull = tp("devnull.qtk");
	const char *dirlink = tp("dirlink");
	char *back;

	bin();
	REQUIRE(make_qtk() == 0);
	REQUIRE(t_write_file(real, "keep", 4) == 0);
	REQUIRE(symlink(real, link) == 0);
	REQUIRE(symlink(tp("nowhere"), dangling) == 0);
	/* safe even as root: a regression replaces the link, not /dev/null */
	REQUIRE(symlink("/dev/null", devnull) == 0);
	REQUIRE(mkdir(tp("d"), 0755) == 0);
	REQUIRE(symlink(tp("d"), dirlink) == 0);
	for (size_t k = 0; k < NWRITERS; k++) {
		const char *targets[] = { link, dangling, devnull, dirlink };

		for (size_t i = 0; i < 4; i++) {
			CHECK_MSG(run_writer(k, targets[i]) == 1, "%s -> %s: not refused",
			          writers[k].cmd, targets[i]);
			CHECK_MSG(err_has("is a symbolic link", NULL), "%s: message", writers[k].cmd);
			CHECK(ltype(targets[i]) == S_IFLNK);
		}
	}
	back = t_read_file(real, NULL);
	CHECK(back && !strcmp(back, "keep"));
	free(back);
	CHECK(!t_exists(tp("nowhere")));
	CHECK_EQ(t_dir_entries(tp("d")), 0);
	CHECK(ltype("/dev/null") == S_IFCHR);
}

/* Convert stories to MLX at dir with extra flags; exit status. */
static int to_mlx(const char *dir, const char *flags)
{
	return qtk("convert %s -o %s --scheme int4 --group 32 -q -F mlx %s", stories(), dir, flags);
}

TEST(paths_output_mlx_replaces_only_empty_or_previous_mlx)
{
	const char *foreign = tp("foreign"), *hf = tp("hf"), *out = tp("out");
	const char *file = tp("file"), *sub = tp("sub");
	char p[4200];
	char *back;

	bin();
	/* a non-empty directory that is not an MLX output: untouched by --force */
	REQUIRE(mkdir(foreign, 0755) == 0);
	snprintf(p, sizeof p, "%s/notes.txt", foreign);
	REQUIRE(t_write_file(p, "mine", 4) == 0);
	snprintf(p, sizeof p, "%s/config.json", foreign);
	REQUIRE(t_write_file(p, "{}", 2) == 0);
	CHECK_EQ(to_mlx(foreign, "--force"), 1);
	CHECK(err_has("'notes.txt'", "not a previous MLX output", NULL));
	REQUIRE(make_qtk() == 0);
	CHECK_EQ(qtk("export %s --to mlx -R -q --force -o %s", tp("m.qtk"), foreign), 1);
	CHECK(err_has("'notes.txt'", "not a previous MLX output", NULL));
	CHECK_EQ(t_dir_entries(foreign), 2);
	snprintf(p, sizeof p, "%s/notes.txt", foreign);
	back = t_read_file(p, NULL);
	CHECK(back && !strcmp(back, "mine"));
	free(back);
	/* a Hugging Face checkpoint directory: the same file names as an MLX
	 * output, but its weights say "format": "pt" */
	REQUIRE(mkdir(hf, 0755) == 0);
	CHECK_EQ(t_system("cp %s %s/model.safetensors && cp %s %s/config.json", stories(), hf,
	                  t_data("stories260K/config.json"), hf), 0);
	CHECK_EQ(to_mlx(hf, "--force"), 1);
	CHECK(err_has("model.safetensors", "\"format\": \"mlx\"", NULL));
	CHECK_EQ(t_system("cmp -s %s %s/model.safetensors", stories(), hf), 0);
	/* an empty directory is used, with or without --force */
	REQUIRE(mkdir(out, 0755) == 0);
	CHECK_EQ(to_mlx(out, ""), 0);
	snprintf(p, sizeof p, "%s/model.safetensors", out);
	CHECK(t_exists(p));
	/* a previous MLX output: replaced with --force only */
	CHECK_EQ(to_mlx(out, ""), 1);
	CHECK(err_has("--force", NULL));
	CHECK_EQ(qtk("convert %s -o %s --scheme int8 --group 64 -q -F mlx --force", stories(), out),
	         0);
	snprintf(p, sizeof p, "%s/config.json", out);
	back = t_read_file(p, NULL);
	CHECK(back && strstr(back, "\"group_size\": 64"));
	free(back);
	/* ... but not once something else is in it */
	snprintf(p, sizeof p, "%s/README.md", out);
	REQUIRE(t_write_file(p, "x", 1) == 0);
	CHECK_EQ(to_mlx(out, "--force"), 1);
	CHECK(err_has("'README.md'", NULL));
	CHECK(t_exists(p));
	CHECK_EQ(t_dir_entries(out), 4); /* model, config.json, tokenizer.model, README */
	/* a subdirectory is foreign too */
	REQUIRE(mkdir(sub, 0755) == 0);
	CHECK_EQ(to_mlx(sub, ""), 0);
	snprintf(p, sizeof p, "%s/tokenizer.json", sub);
	REQUIRE(mkdir(p, 0755) == 0);
	CHECK_EQ(to_mlx(sub, "--force"), 1);
	CHECK(err_has("'tokenizer.json'", "not a regular file", NULL));
	/* a regular file where the directory would go */
	REQUIRE(t_write_file(file, "keep", 4) == 0);
	CHECK_EQ(to_mlx(file, "--force"), 1);
	CHECK(err_has("is a regular file", NULL));
	CHECK(ltype(file) == S_IFREG);
	/* nothing left behind by any of it */
	CHECK_EQ(t_system("ls -A %s | grep -q qtk-tmp", t_tmpdir()), 1);
}

/* The path changes between open and commit: looked at again before the
 * move, and refused then. */
TEST(paths_output_checked_again_at_commit)
{
	static const qtk_st_desc d = { .name = "w", .dtype = QTK_DT_F32, .ndim = 1,
	                               .shape = { 4 } };
	static const float w[4] = { 1, 2, 3, 4 };
	const char *path = tp("late.safetensors");
	qtk_write_opts force = { .force = 1 }, noforce = { 0 };
	qtk_st_writer *wr;
	qtk_status st;

	for (int f = 0; f < 2; f++) {
		/* a regular file (or nothing) at open, a FIFO at commit */
		if (f)
			REQUIRE(t_write_file(path, "old", 3) == 0);
		REQUIRE(qtk_st_writer_open(&wr, path, &d, 1, NULL, f ? &force : &noforce, &st) ==
		        QTK_OK);
		REQUIRE(qtk_st_writer_put(wr, 0, 0, w, sizeof w, &st) == QTK_OK);
		unlink(path);
		REQUIRE(mkfifo(path, 0644) == 0);
		CHECK(qtk_st_writer_commit(wr, &st) != QTK_OK);
		CHECK_MSG(strstr(st.msg, f ? "is a FIFO" : "appeared"), "message: %s", st.msg);
		CHECK(ltype(path) == S_IFIFO);
		CHECK_EQ(t_dir_entries(t_tmpdir()), 1);
		unlink(path);
	}
	/* nothing at open; with force, a FIFO that appears is not replaced */
	REQUIRE(qtk_st_writer_open(&wr, path, &d, 1, NULL, &force, &st) == QTK_OK);
	REQUIRE(qtk_st_writer_put(wr, 0, 0, w, sizeof w, &st) == QTK_OK);
	REQUIRE(mkfifo(path, 0644) == 0);
	CHECK(qtk_st_writer_commit(wr, &st) != QTK_OK);
	CHECK(ltype(path) == S_IFIFO);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 1);
}

/* An outdir kind that accepts a directory holding only files named "ok". */
static qtk_err only_ok(const char *dir, qtk_status *st)
{
	char p[4200];

	snprintf(p, sizeof p, "%s/ok", dir);
	return t_dir_entries(dir) == 1 && t_exists(p)
	       ? QTK_OK : qtk_fail(st, QTK_E_ARG, "%s: foreign", dir);
}

TEST(paths_outdir_checked_again_at_commit)
{
	static const qtk_outdir_kind kind = { .name = "test", .check = only_ok };
	const char *path = tp("od");
	qtk_write_opts force = { .force = 1 };
	char p[4200];
	qtk_outdir *d;
	qtk_status st;

	/* previous output at open; a foreign file in it at commit */
	REQUIRE(mkdir(path, 0755) == 0);
	snprintf(p, sizeof p, "%s/ok", path);
	REQUIRE(t_write_file(p, "1", 1) == 0);
	REQUIRE(qtk_outdir_open(&d, path, &force, &kind, &st) == QTK_OK);
	snprintf(p, sizeof p, "%s/new", qtk_outdir_tmp(d));
	REQUIRE(t_write_file(p, "2", 1) == 0);
	snprintf(p, sizeof p, "%s/precious", path);
	REQUIRE(t_write_file(p, "3", 1) == 0);
	CHECK(qtk_outdir_commit(d, &st) != QTK_OK);
	CHECK_MSG(strstr(st.msg, "foreign"), "message: %s", st.msg);
	CHECK(t_exists(p));
	CHECK_EQ(t_dir_entries(path), 2);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 1);
	/* nothing at open; a FIFO at commit */
	t_system("rm -rf %s", path);
	REQUIRE(qtk_outdir_open(&d, path, &force, &kind, &st) == QTK_OK);
	REQUIRE(mkfifo(path, 0644) == 0);
	CHECK(qtk_outdir_commit(d, &st) != QTK_OK);
	CHECK_MSG(strstr(st.msg, "is a FIFO"), "message: %s", st.msg);
	CHECK(ltype(path) == S_IFIFO);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 1);
}

/* ---- 2. inputs that are not regular files ------------------------------- */

/* qtk ARGS fails at once (no timeout) naming what and phrase. */
#define REFUSES(what, phrase, ...)                                                  \
	do {                                                                        \
		CHECK_EQ(qtk(__VA_ARGS__), 1);                                      \
		CHECK_MSG(err_has(what, phrase, NULL), "%s", #__VA_ARGS__);         \
	} while (0)

TEST(paths_input_fifo_refused_promptly)
{
	const char *fifo = tp("in.fifo"), *sock = tp("in.sock"), *o = tp("o");

	bin();
	REQUIRE(mkfifo(fifo, 0644) == 0);
	REQUIRE(make_socket(sock) == 0);
	REFUSES(fifo, "is a FIFO", "inspect %s", fifo);
	REFUSES(fifo, "is a FIFO", "inspect --json %s", fifo);
	REFUSES(fifo, "is a FIFO", "convert %s -o %s --scheme int8", fifo, o);
	REFUSES(fifo, "is a FIFO", "convert %s -o %s --scheme int8 -F gguf", fifo, o);
	REFUSES(fifo, "is a FIFO", "convert %s -n --scheme int8", fifo);
	REFUSES(fifo, "is a FIFO", "verify %s", fifo);
	REFUSES(fifo, "is a FIFO", "export %s --to gguf -o %s", fifo, o);
	REFUSES(fifo, "is a FIFO", "export %s --to mlx -o %s", fifo, o);
	REFUSES(fifo, "is a FIFO", "pack %s %s", fifo, o);
	REFUSES(fifo, "is a FIFO", "unpack %s %s", fifo, o);
	REFUSES(sock, "is a socket", "inspect %s", sock);
	REFUSES(sock, "is a socket", "verify %s", sock);
	REFUSES(t_tmpdir(), "is a directory", "verify %s", t_tmpdir());
	/* a recipe and a calibration file */
	REFUSES(fifo, "is a FIFO", "convert %s -o %s --recipe %s", stories(), o, fifo);
	REFUSES(fifo, "is a FIFO", "convert %s -o %s --scheme int8 --calib %s", stories(), o, fifo);
	CHECK(!t_exists(o));
}

TEST(paths_input_fifo_shard_and_index_refused)
{
	const char *dir = tp("ck"), *o = tp("o");
	char idx[4200], shard[4200], one[4200];
	static const char json[] =
		"{\"metadata\": {}, \"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\","
		" \"b\": \"model-00002-of-00002.safetensors\"}}";

	bin();
	REQUIRE(mkdir(dir, 0755) == 0);
	snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
	REQUIRE(t_write_file(idx, json, sizeof json - 1) == 0);
	snprintf(shard, sizeof shard, "%s/model-00001-of-00002.safetensors", dir);
	REQUIRE(t_system("cp %s %s", stories(), shard) == 0);
	snprintf(shard, sizeof shard, "%s/model-00002-of-00002.safetensors", dir);
	REQUIRE(mkfifo(shard, 0644) == 0);
	REFUSES(shard, "is a FIFO", "inspect %s", idx);
	REFUSES(shard, "is a FIFO", "inspect %s", dir);
	REFUSES(shard, "is a FIFO", "convert %s -o %s --scheme int8", idx, o);
	/* the index itself a FIFO */
	unlink(idx);
	REQUIRE(mkfifo(idx, 0644) == 0);
	REFUSES(idx, "is a FIFO", "inspect %s", idx);
	REFUSES(idx, "is a FIFO", "convert %s -o %s --scheme int8 -F mlx", dir, o);
	/* a directory whose one .safetensors is a FIFO */
	snprintf(one, sizeof one, "%s/one", t_tmpdir());
	REQUIRE(mkdir(one, 0755) == 0);
	snprintf(one, sizeof one, "%s/one/model.safetensors", t_tmpdir());
	REQUIRE(mkfifo(one, 0644) == 0);
	REFUSES(one, "is a FIFO", "inspect %s/one", t_tmpdir());
	CHECK(!t_exists(o));
}

TEST(paths_input_fifo_beside_checkpoint_refused)
{
	static const char *const side[] = { "config.json", "tokenizer.model", "tokenizer.json",
	                                     "generation_config.json" };
	static const char *const fmts[] = { "qtk", "gguf", "mlx" };
	const char *dir = tp("ck"), *o = tp("o");
	char in[4200], p[4200];

	bin();
	REQUIRE(mkdir(dir, 0755) == 0);
	snprintf(in, sizeof in, "%s/model.safetensors", dir);
	REQUIRE(t_system("cp %s %s && cp %s %s %s", stories(), in,
	                 t_data("stories260K/config.json"), t_data("stories260K/tokenizer.model"),
	                 dir) == 0);
	for (size_t i = 0; i < sizeof side / sizeof *side; i++) {
		snprintf(p, sizeof p, "%s/%s", dir, side[i]);
		t_system("mv %s %s.keep 2>/dev/null", p, p);
		REQUIRE(mkfifo(p, 0644) == 0);
		for (size_t f = 0; f < 3; f++)
			REFUSES(p, "is a FIFO", "convert %s -o %s --scheme int4 --group 32 -F %s", in, o,
			        fmts[f]);
		unlink(p);
		t_system("mv %s.keep %s 2>/dev/null", p, p);
	}
	CHECK(!t_exists(o));
	/* export reads them from the source directory recorded in the .qtk */
	REQUIRE(qtk("convert %s -o %s --scheme int4 --group 32 -q", in, tp("m.qtk")) == 0);
	snprintf(p, sizeof p, "%s/tokenizer.model", dir);
	unlink(p);
	REQUIRE(mkfifo(p, 0644) == 0);
	REFUSES(p, "is a FIFO", "export %s --to mlx -o %s", tp("m.qtk"), o);
	REFUSES(p, "is a FIFO", "export %s --to gguf -o %s", tp("m.qtk"), o);
	CHECK(!t_exists(o));
}

/* The readers themselves, in process: each refuses a FIFO and a directory
 * without blocking (the alarm fails the test if one blocks). */
TEST(paths_readers_refuse_fifo_in_process)
{
	const char *fifo = tp("x.fifo");
	qtk_st_file *sf;
	qtk_gguf_file *gf;
	qtk_pack_file *pf;
	qtk_spm_vocab *v;
	qtk_status st;
	char *text;
	int fd;

	alarm(60);
	REQUIRE(mkfifo(fifo, 0644) == 0);
	CHECK_EQ(qtk_st_open(fifo, &sf, &st), QTK_E_IO);
	CHECK_MSG(strstr(st.msg, "is a FIFO"), "%s", st.msg);
	CHECK_EQ(qtk_gguf_open(fifo, &gf, &st), QTK_E_IO);
	CHECK_EQ(qtk_pack_open(fifo, 0, &pf, &st), QTK_E_IO);
	CHECK_EQ(qtk_spm_read(fifo, &v, &st), QTK_E_IO);
	CHECK_EQ(qtk_fmt_read_input(fifo, &text, NULL, &st), QTK_E_IO);
	CHECK_EQ(qtk_fmt_open_input(fifo, &fd, NULL, &st), QTK_E_IO);
	CHECK_EQ(fd, -1);
	CHECK_EQ(qtk_fmt_open_input(t_tmpdir(), &fd, NULL, &st), QTK_E_IO);
	CHECK_MSG(strstr(st.msg, "is a directory"), "%s", st.msg);
	CHECK_EQ(qtk_fmt_open_input(tp("absent"), &fd, NULL, &st), QTK_E_NOT_FOUND);
	CHECK_EQ(qtk_pack_open(t_tmpdir(), 0, &pf, &st), QTK_E_IO);
	alarm(0);
}

/* qtk_fmt_pread: whole reads, a file that ends early, a failed read, and an
 * offset past what a file can have */
TEST(paths_pread_checks_the_end)
{
	const char *f = tp("ten.bin");
	char buf[16];
	qtk_status st;
	int fd;

	REQUIRE(t_write_file(f, "0123456789", 10) == 0);
	REQUIRE(qtk_fmt_open_input(f, &fd, NULL, &st) == QTK_OK);
	CHECK_EQ(qtk_fmt_pread(fd, buf, 4, 6, f, &st), QTK_OK);
	CHECK(!memcmp(buf, "6789", 4));
	CHECK_EQ(qtk_fmt_pread(fd, buf, 5, 6, f, &st), QTK_E_IO);
	CHECK_MSG(strstr(st.msg, f) && strstr(st.msg, "ends before byte 11"), "%s", st.msg);
	CHECK_EQ(qtk_fmt_pread(fd, buf, 1, UINT64_MAX, f, &st), QTK_E_OVERFLOW);
	qtk_fault_arm(QTK_FAULT_READ, 1, EIO);
	CHECK_EQ(qtk_fmt_pread(fd, buf, 4, 0, f, &st), QTK_E_IO);
	CHECK(qtk_fault_fired(QTK_FAULT_READ));
	qtk_fault_arm(QTK_FAULT_READ, 0, 0);
	CHECK_MSG(strstr(st.msg, "read failed at byte 0") && strstr(st.msg, strerror(EIO)), "%s",
	          st.msg);
	close(fd);
	CHECK_EQ(qtk_fmt_pread(fd, buf, 4, 0, f, &st), QTK_E_IO); /* EBADF */
}

/* ---- 3. long output names and the temporaries' names -------------------- */

/* t_tmpdir()/ + a name of n bytes: 'c' repeated, ending in suffix. */
static const char *long_name(size_t n, const char *suffix)
{
	static char buf[4][4600];
	static int k;
	char *p = buf[k++ & 3];
	size_t dl = strlen(t_tmpdir()) + 1, sl = strlen(suffix);

	snprintf(p, 4600, "%s/", t_tmpdir());
	memset(p + dl, 'c', n - sl);
	memcpy(p + dl + n - sl, suffix, sl + 1);
	return p;
}

TEST(paths_output_name_255_bytes_works_256_is_too_long)
{
	static const struct { const char *flags, *suffix; } f[] = {
		{ "", ".qtk" }, { "-F gguf", ".gguf" }, { "-F mlx", "" },
	};

	bin();
	t_write_file(err_path(), "", 0);
	for (size_t k = 0; k < 3; k++) {
		const char *ok = long_name(255, f[k].suffix), *bad = long_name(256, f[k].suffix);
		int before = t_dir_entries(t_tmpdir());

		CHECK_MSG(qtk("convert %s -o %s --scheme int4 --group 32 -q %s", stories(), ok,
		              f[k].flags) == 0, "255-byte name, %s", f[k].flags);
		CHECK(t_exists(ok));
		if (!k)
			CHECK_EQ(qtk("verify -q %s", ok), 0);
		CHECK_EQ(t_dir_entries(t_tmpdir()), before + 1);
		CHECK_EQ(qtk("convert %s -o %s --scheme int4 --group 32 -q %s", stories(), bad,
		             f[k].flags), 1);
		CHECK(err_has(bad, strerror(ENAMETOOLONG), NULL));
		CHECK_EQ(t_dir_entries(t_tmpdir()), before + 1);
	}
}

TEST(paths_temporary_name_fixed_swept_by_pid)
{
	static const qtk_st_desc d = { .name = "w", .dtype = QTK_DT_F32, .ndim = 1,
	                               .shape = { 4 } };
	static const float w[4] = { 1, 2, 3, 4 };
	qtk_write_opts wo = { 0 };
	qtk_st_writer *wr;
	qtk_status st;
	char live[64], name[300], p[4600];
	const char *out = long_name(255, ".safetensors");
	int status, seen = 0;
	pid_t dead = fork();
	DIR *dir;
	struct dirent *e;

	REQUIRE(dead >= 0);
	if (dead == 0)
		_exit(0);
	waitpid(dead, &status, 0);
	/* the temporary of a 255-byte name: ".qtk-tmp-PID-XXXXXX" */
	REQUIRE(qtk_st_writer_open(&wr, out, &d, 1, NULL, &wo, &st) == QTK_OK);
	snprintf(live, sizeof live, ".qtk-tmp-%ld-", (long)getpid());
	REQUIRE((dir = opendir(t_tmpdir())) != NULL);
	while ((e = readdir(dir)) != NULL) {
		if (e->d_name[0] != '.' || !strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		seen++;
		CHECK_MSG(!strncmp(e->d_name, live, strlen(live)) &&
		          strlen(e->d_name) == strlen(live) + 6, "temporary '%s'", e->d_name);
	}
	closedir(dir);
	CHECK_EQ(seen, 1);
	/* the signal handlers' cleanup removes it */
	qtk_fmt_remove_temps();
	CHECK_EQ(t_dir_entries(t_tmpdir()), 0);
	qtk_st_writer_abort(wr);
	/* stale ones of a dead pid go (files, directories, the old naming), a
	 * live writer's and names that only look alike stay */
	snprintf(name, sizeof name, ".qtk-tmp-%ld-abcdef", (long)dead);
	snprintf(p, sizeof p, "%s/%s", t_tmpdir(), name);
	REQUIRE(t_write_file(p, "x", 1) == 0);
	snprintf(p, sizeof p, "%s/.qtk-tmp-%ld-ghijkl", t_tmpdir(), (long)dead);
	REQUIRE(mkdir(p, 0755) == 0);
	snprintf(p, sizeof p, "%s/.qtk-tmp-%ld-ghijkl/model.safetensors", t_tmpdir(), (long)dead);
	REQUIRE(t_write_file(p, "x", 1) == 0);
	snprintf(p, sizeof p, "%s/.m.qtk.qtk-tmp-%ld-mnopqr", t_tmpdir(), (long)dead);
	REQUIRE(t_write_file(p, "x", 1) == 0);
	snprintf(p, sizeof p, "%s/%sstuvwx", t_tmpdir(), live);
	REQUIRE(t_write_file(p, "x", 1) == 0);
	snprintf(p, sizeof p, "%s/.qtk-tmp-notes", t_tmpdir());
	REQUIRE(t_write_file(p, "x", 1) == 0);
	snprintf(p, sizeof p, "%s/qtk-tmp-%ld-abcdef", t_tmpdir(), (long)dead);
	REQUIRE(t_write_file(p, "x", 1) == 0);
	snprintf(p, sizeof p, "%s/.qtk-tmp-%ld-abcdefg", t_tmpdir(), (long)dead);
	REQUIRE(t_write_file(p, "x", 1) == 0);
	REQUIRE(qtk_st_write(tp("o.safetensors"), &d, (const void *const[]){ w }, 1, NULL, &wo,
	                     &st) == QTK_OK);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 5); /* o, live, 3 look-alikes */
	snprintf(p, sizeof p, "%s/%sstuvwx", t_tmpdir(), live);
	CHECK(t_exists(p));
}

/* A mapped input truncated by another program while qtk reads it: with
 * qtk_fmt_catch_sigbus (which the CLI installs) the read past the new end
 * becomes a message naming the file and the byte, the temporaries are
 * removed and the process exits with the status given; a SIGBUS that is
 * not a read of one of qtk's mappings keeps its default action. */
static int sigbus_child(int how, const char *src, const char *out, const char *errf)
{
	static const qtk_st_desc d = { .name = "o", .dtype = QTK_DT_F32, .ndim = 1,
	                               .shape = { 4 } };
	qtk_write_opts wo = { 0 };
	qtk_st_writer *wr;
	qtk_outdir *od;
	qtk_st_file *f;
	qtk_status st;
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0) {
		int fd = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		volatile const uint8_t *p;
		uint8_t *own;
		if (fd < 0 || dup2(fd, 2) < 0 || qtk_fmt_catch_sigbus(7))
			_exit(90);
		if (how == 1) { /* not a fault at all: sent to us */
			raise(SIGBUS);
			_exit(91);
		}
		if (how == 2) { /* a mapping that is not qtk's */
			int sfd = open(src, O_RDWR);
			own = mmap(NULL, 1 << 18, PROT_READ, MAP_SHARED, sfd, 0);
			if (own == MAP_FAILED || ftruncate(sfd, 4096))
				_exit(92);
			p = own;
			_exit(p[200000] == 0x55 ? 93 : 94);
		}
		/* a file and a directory being written: both temporaries go */
		if (qtk_st_open(src, &f, &st) != QTK_OK ||
		    qtk_st_writer_open(&wr, out, &d, 1, NULL, &wo, &st) != QTK_OK ||
		    qtk_outdir_open(&od, t_tmp("never_dir"), &wo, NULL, &st) != QTK_OK)
			_exit(95);
		if (t_dir_entries(t_tmpdir()) != 4) /* source, message, two temporaries */
			_exit(89);
		if (truncate(src, 4096))
			_exit(96);
		p = qtk_st_get(f, 0)->data;
		_exit(p[200000 - 100] == 0x55 ? 97 : 98);
	}
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	return status;
}

TEST(paths_truncated_input_is_a_message_not_a_crash)
{
	static float w[65536];
	const char *src = t_tmp("shrinks.safetensors"), *out = t_tmp("never.safetensors");
	const char *errf = t_tmp("sigbus.err");
	char want[600];
	int status;

	for (size_t i = 0; i < 65536; i++)
		w[i] = (float)i;
	for (int how = 0; how < 3; how++) {
		static const qtk_st_desc d = { .name = "w", .dtype = QTK_DT_F32, .ndim = 1,
		                               .shape = { 65536 } };
		qtk_write_opts wo = { .force = 1 };
		qtk_status st;
		REQUIRE(qtk_st_write(src, &d, (const void *const[]){ w }, 1, NULL, &wo, &st) ==
		        QTK_OK);
		status = sigbus_child(how, src, out, errf);
		REQUIRE(status != -1);
		if (how) {
			CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS,
			          "case %d: status %#x, not killed by SIGBUS", how, status);
			continue;
		}
		CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 7, "status %#x", status);
		snprintf(want, sizeof want, "qtk: %s: the file shrank while qtk was reading it", src);
		char *msg = t_read_file(errf, NULL);
		CHECK_MSG(msg && strstr(msg, want) && strstr(msg, "no data at byte 1999"),
		          "stderr: %s", msg ? msg : "(none)");
		free(msg);
		CHECK(!t_exists(out));
		CHECK(!t_exists(t_tmp("never_dir")));
		if (t_dir_entries(t_tmpdir()) != 2) /* the source and the message */
			t_system("ls -la %s", t_tmpdir());
		CHECK_EQ(t_dir_entries(t_tmpdir()), 2);
	}
}
