/* The fsync helper thread: results come back to the waiter, hints never
 * block and never turn into an error, and a missing file is reported. */
#include <errno.h>
#include <stdio.h>

#include "storage/syncer.h"
#include "tests/unit/test.h"

TEST_IMPL(syncer_results)
{
    vg_syncer_t *s = NULL;
    char path[512];
    ASSERT_EQ(vg_syncer_create(&s), 0);
    /* Nothing in flight: waiting returns at once. */
    ASSERT_EQ(vg_syncer_wait(s), 0);
    snprintf(path, sizeof path, "%s/f", test_tmpdir());
    FILE *f = fopen(path, "w");
    ASSERT(f);
    for (int i = 0; i < 1000; i++)
        fputs("some data to flush\n", f);
    fclose(f);
    vg_syncer_writeback(s, path);
    vg_syncer_writeback(s, path);
    vg_syncer_start(s, path);
    ASSERT_EQ(vg_syncer_wait(s), 0);
    vg_syncer_start(s, test_tmpdir());
    ASSERT_EQ(vg_syncer_wait(s), 0);
    snprintf(path, sizeof path, "%s/missing", test_tmpdir());
    vg_syncer_writeback(s, path); /* a hint on a missing file is not an error */
    vg_syncer_start(s, path);
    ASSERT_EQ(vg_syncer_wait(s), -ENOENT);
    ASSERT_EQ(vg_syncer_wait(s), 0);
    vg_syncer_destroy(s);
    vg_syncer_destroy(NULL);
    return 0;
}
