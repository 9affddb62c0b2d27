/* convert: a streaming JSON writer for `qtk inspect --json` — values go
 * to the stream as they come (no tree in memory), one per line, indented
 * by one space per level as jansson's JSON_INDENT(1) does. Strings are
 * written as valid UTF-8 whatever their bytes: a byte that does not start
 * or continue a valid UTF-8 sequence becomes U+FFFD. */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "cli.h"

void cj_init(cj_writer *j, FILE *out)
{
	memset(j, 0, sizeof *j);
	j->out = out;
	j->first[0] = 1;
}

/* Length of the valid UTF-8 sequence at s[0, n), or 0 if none starts there
 * (overlong forms, surrogates and code points past U+10FFFF are invalid). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	unsigned char lo = 0x80, hi = 0xBF;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		len = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		len = 4;
	else
		return 0;
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F;
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t k = 2; k < len; k++)
		if ((s[k] & 0xC0) != 0x80)
			return 0;
	return len;
}

size_t cj_utf8_cut(const char *s, size_t n, size_t max)
{
	size_t k = max;

	if (n <= max)
		return n;
	/* back to the start of the character s[max] continues (3 bytes at most) */
	for (int i = 0; i < 3 && k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80; i++)
		k--;
	return k;
}

static void put_string(cj_writer *j, const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	FILE *o = j->out;

	fputc('"', o);
	for (size_t k = 0; k < n;) {
		unsigned char c = s[k];
		size_t len;

		if (c == '"' || c == '\\') {
			fputc('\\', o);
			fputc(c, o);
			k++;
		} else if (c < 0x20) {
			static const char esc[] = "btn\0fr";
			if (c >= 8 && c <= 13 && c != 11)
				fprintf(o, "\\%c", esc[c - 8]);
			else
				fprintf(o, "\\u%04x", c);
			k++;
		} else if ((len = utf8_len(s + k, n - k)) != 0) {
			fwrite(s + k, 1, len, o);
			k += len;
		} else {
			fputs("\xEF\xBF\xBD", o); /* U+FFFD for one invalid byte */
			k++;
		}
	}
	fputc('"', o);
}

/* Comma, newline and indent before a value; then "key": inside objects. */
static void begin(cj_writer *j, const char *key)
{
	if (j->depth > 0) {
		if (!j->first[j->depth])
			fputc(',', j->out);
		fputc('\n', j->out);
		for (int d = 0; d < j->depth; d++)
			fputc(' ', j->out);
	}
	j->first[j->depth] = 0;
	if (key) {
		put_string(j, key, strlen(key));
		fputs(": ", j->out);
	}
}

static void open_(cj_writer *j, const char *key, char c)
{
	begin(j, key);
	fputc(c, j->out);
	if (j->depth + 1 < CJ_MAX_DEPTH)
		j->depth++;
	j->first[j->depth] = 1;
}

static void close_(cj_writer *j, char c)
{
	int empty = j->first[j->depth];

	if (j->depth > 0)
		j->depth--;
	if (!empty) {
		fputc('\n', j->out);
		for (int d = 0; d < j->depth; d++)
			fputc(' ', j->out);
	}
	fputc(c, j->out);
}

void cj_obj(cj_writer *j, const char *key) { open_(j, key, '{'); }
void cj_arr(cj_writer *j, const char *key) { open_(j, key, '['); }
void cj_end_obj(cj_writer *j) { close_(j, '}'); }
void cj_end_arr(cj_writer *j) { close_(j, ']'); }

void cj_strn(cj_writer *j, const char *key, const char *s, size_t n)
{
	begin(j, key);
	put_string(j, s, n);
}

void cj_str(cj_writer *j, const char *key, const char *s)
{
	if (!s) {
		cj_null(j, key);
		return;
	}
	cj_strn(j, key, s, strlen(s));
}

void cj_int(cj_writer *j, const char *key, int64_t v)
{
	begin(j, key);
	fprintf(j->out, "%" PRId64, v);
}

void cj_uint(cj_writer *j, const char *key, uint64_t v)
{
	begin(j, key);
	fprintf(j->out, "%" PRIu64, v);
}

void cj_real(cj_writer *j, const char *key, double v, int digits)
{
	char b[40];

	if (!isfinite(v)) {
		cj_null(j, key); /* JSON has no NaN or Inf */
		return;
	}
	snprintf(b, sizeof b, "%.*g", digits, v);
	/* keep it a real to a reader (jansson prints 1.0, not 1) */
	if (!strpbrk(b, ".e"))
		strcat(b, ".0");
	begin(j, key);
	fputs(b, j->out);
}

void cj_bool(cj_writer *j, const char *key, int v)
{
	begin(j, key);
	fputs(v ? "true" : "false", j->out);
}

void cj_null(cj_writer *j, const char *key)
{
	begin(j, key);
	fputs("null", j->out);
}

void cj_raw_begin(cj_writer *j, const char *key)
{
	begin(j, key);
}

int cj_finish(cj_writer *j)
{
	fputc('\n', j->out);
	if (fflush(j->out) != 0 || ferror(j->out)) {
		fprintf(stderr, "qtk: cannot write the JSON to standard output\n");
		return QTK_EXIT_FAIL;
	}
	return QTK_EXIT_OK;
}

/* ---- text output: names and strings from files, made safe to print ---- */

const char *cli_text(const char *s, size_t n)
{
	/* a ring, so one printf can show several; single-threaded CLI use */
	static char ring[8][CLI_TEXT_MAX + 8];
	static unsigned next;
	char *out = ring[next++ % 8];
	const unsigned char *p = (const unsigned char *)(s ? s : "(null)");
	size_t k = 0, i = 0;

	if (!s)
		n = 6;
	while (i < n) {
		size_t len = utf8_len(p + i, n - i);

		/* C1 controls (U+0080..U+009F: 0xC2 0x80..0x9F) act as escapes too */
		if (len == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0)
			len = 0;
		if (len && !(len == 1 && (p[i] < 0x20 || p[i] == 0x7f || p[i] == '\\'))) {
			if (k + len > CLI_TEXT_MAX)
				break;
			memcpy(out + k, p + i, len);
			k += len;
			i += len;
			continue;
		}
		if (k + 4 > CLI_TEXT_MAX)
			break;
		if (p[i] == '\\') {
			out[k++] = '\\';
			out[k++] = '\\';
		} else {
			k += (size_t)snprintf(out + k, 5, "\\x%02x", p[i]);
		}
		i++;
	}
	if (i < n)
		memcpy(out + k, "...", 4);
	else
		out[k] = 0;
	return out;
}
