/* The unit-test harness: TEST_IMPL(name) defines a test, ASSERT_* check
 * values. The runner runs each test in its own process, so a crash or an
 * abort fails that test only. The list of tests is generated from the
 * TEST_IMPL lines by the Makefile. */
#ifndef VG_TEST_H
#define VG_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_IMPL(name) int run_test_##name(void)

#define TEST__FAIL(...)                                                  \
    do {                                                                 \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                  \
        fprintf(stderr, __VA_ARGS__);                                    \
        fprintf(stderr, "\n");                                           \
        return 1;                                                        \
    } while (0)

#define ASSERT(c)                                                        \
    do {                                                                 \
        if (!(c))                                                        \
            TEST__FAIL("assertion failed: %s", #c);                      \
    } while (0)

#define ASSERT__CMP(a, op, b, fmt, type)                                 \
    do {                                                                 \
        type a_ = (a), b_ = (b);                                         \
        if (!(a_ op b_))                                                 \
            TEST__FAIL("%s %s %s: " fmt " vs " fmt, #a, #op, #b, a_, b_); \
    } while (0)

#define ASSERT_EQ(a, b) ASSERT__CMP(a, ==, b, "%lld", long long)
#define ASSERT_NE(a, b) ASSERT__CMP(a, !=, b, "%lld", long long)
#define ASSERT_LT(a, b) ASSERT__CMP(a, <, b, "%lld", long long)
#define ASSERT_LE(a, b) ASSERT__CMP(a, <=, b, "%lld", long long)
#define ASSERT_GT(a, b) ASSERT__CMP(a, >, b, "%lld", long long)
#define ASSERT_GE(a, b) ASSERT__CMP(a, >=, b, "%lld", long long)
#define ASSERT_DBL_NEAR(a, b, eps)                                       \
    do {                                                                 \
        double a_ = (a), b_ = (b);                                       \
        if (!(a_ - b_ <= (eps) && b_ - a_ <= (eps)))                     \
            TEST__FAIL("%s ~ %s: %g vs %g", #a, #b, a_, b_);             \
    } while (0)
#define ASSERT_STR_EQ(a, b)                                              \
    do {                                                                 \
        const char *a_ = (a), *b_ = (b);                                 \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                           \
            TEST__FAIL("%s == %s: \"%s\" vs \"%s\"", #a, #b,             \
                       a_ ? a_ : "(null)", b_ ? b_ : "(null)");          \
    } while (0)
#define ASSERT_STR_CONTAINS(hay, needle)                                 \
    do {                                                                 \
        const char *h_ = (hay), *n_ = (needle);                          \
        if (!h_ || !strstr(h_, n_))                                      \
            TEST__FAIL("\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", n_); \
    } while (0)

/* A fresh empty directory for this test (under $TMPDIR); removed by the
 * runner after the test. Returns a static buffer. */
const char *test_tmpdir(void);

/* Runs the shell command built from FMT; returns system()'s status. */
int test_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The index at test_tmpdir()/index.sqlite, opened (created and migrated
 * when new), or NULL with the reason on stderr. */
struct vg_index;
struct vg_index *test_open_index(void);

#endif
