/* UID validation, path building and durable placement. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/error.h"
#include "storage/store.h"
#include "tests/unit/test.h"

TEST_IMPL(store_uid_valid)
{
    ASSERT_EQ(vg_uid_valid("1.2.840.10008.5.1.4.1.1.2"), 1);
    ASSERT_EQ(vg_uid_valid("2.25.329800735698586629295641978511506172918"), 1);
    ASSERT_EQ(vg_uid_valid("1.3.12.2.1107.5.1.4.01234"), 1); /* leading zero: accepted */
    ASSERT_EQ(vg_uid_valid("1"), 1);
    ASSERT_EQ(vg_uid_valid(""), 0);
    ASSERT_EQ(vg_uid_valid(NULL), 0);
    ASSERT_EQ(vg_uid_valid("."), 0);
    ASSERT_EQ(vg_uid_valid(".."), 0);
    ASSERT_EQ(vg_uid_valid("1..2"), 0);
    ASSERT_EQ(vg_uid_valid(".1.2"), 0);
    ASSERT_EQ(vg_uid_valid("1.2."), 0);
    ASSERT_EQ(vg_uid_valid("1.2.abc"), 0);
    ASSERT_EQ(vg_uid_valid("1.2/../3"), 0);
    ASSERT_EQ(vg_uid_valid("1.2 "), 0);
    ASSERT_EQ(vg_uid_valid("-1.2"), 0);
    /* 64 characters is the limit. */
    char uid[80];
    memset(uid, '1', 64);
    uid[64] = '\0';
    ASSERT_EQ(vg_uid_valid(uid), 1);
    uid[64] = '1';
    uid[65] = '\0';
    ASSERT_EQ(vg_uid_valid(uid), 0);
    return 0;
}

TEST_IMPL(store_relpath)
{
    char buf[256];
    ASSERT_EQ(vg_store_relpath(buf, sizeof buf, "1.2", "1.2.3", "1.2.3.4"), 0);
    ASSERT_STR_EQ(buf, "studies/1.2/1.2.3/1.2.3.4.dcm");
    strcpy(buf, "untouched");
    ASSERT_EQ(vg_store_relpath(buf, sizeof buf, "1.2", "..", "1.2.3.4"), VG_EUID);
    ASSERT_EQ(vg_store_relpath(buf, sizeof buf, "../../etc", "1", "1"), VG_EUID);
    ASSERT_EQ(vg_store_relpath(buf, sizeof buf, "1", "1", "/etc/passwd"), VG_EUID);
    ASSERT_STR_EQ(buf, "untouched");
    ASSERT_EQ(vg_store_relpath(buf, 10, "1.2", "1.2.3", "1.2.3.4"), -ENAMETOOLONG);
    return 0;
}

TEST_IMPL(store_place_and_prepare)
{
    const char *dir = test_tmpdir();
    int removed = -1;
    ASSERT_EQ(vg_store_prepare(dir, &removed), 0);
    ASSERT_EQ(removed, 0);
    char tmp[512], rel[256], final[768];
    snprintf(tmp, sizeof tmp, "%s/tmp/a.part", dir);
    FILE *f = fopen(tmp, "w");
    ASSERT(f);
    fputs("dataset", f);
    fclose(f);
    ASSERT_EQ(vg_store_relpath(rel, sizeof rel, "1.2", "1.2.3", "1.2.3.4"), 0);
    ASSERT_EQ(vg_store_place(dir, tmp, rel), 0);
    snprintf(final, sizeof final, "%s/%s", dir, rel);
    struct stat sb;
    ASSERT_EQ(stat(final, &sb), 0);
    ASSERT_EQ(sb.st_size, 7);
    ASSERT_EQ(access(tmp, F_OK), -1);
    /* A second file in the same series reuses the directories. */
    snprintf(tmp, sizeof tmp, "%s/tmp/b.part", dir);
    f = fopen(tmp, "w");
    fputs("x", f);
    fclose(f);
    ASSERT_EQ(vg_store_relpath(rel, sizeof rel, "1.2", "1.2.3", "1.2.3.5"), 0);
    ASSERT_EQ(vg_store_place(dir, tmp, rel), 0);
    /* Leftovers in tmp/ are removed at start-up. */
    snprintf(tmp, sizeof tmp, "%s/tmp/c.part", dir);
    f = fopen(tmp, "w");
    fclose(f);
    ASSERT_EQ(vg_store_prepare(dir, &removed), 0);
    ASSERT_EQ(removed, 1);
    ASSERT_EQ(access(final, F_OK), 0);
    /* A missing temp file is an error and nothing is created. */
    ASSERT_EQ(vg_store_place(dir, tmp, "studies/9/9/9.dcm"), -ENOENT);
    snprintf(final, sizeof final, "%s/studies/9", dir);
    ASSERT_EQ(access(final, F_OK), -1);
    uint64_t free_bytes = 0;
    ASSERT_EQ(vg_store_free_bytes(dir, &free_bytes), 0);
    ASSERT_GT(free_bytes, 0);
    return 0;
}
