#include "store/file_store.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

using namespace lockstep::store;
namespace fs = std::filesystem;

TEST(blob_path, accepts_client_paths)
{
    std::string why;
    auto p = blob_path("apps/io.app/snap/Rtq-_/tz.wK/0000005377_47.GzYc", why);
    ASSERT_TRUE(p) << why;
    EXPECT_EQ(*p, "apps/io.app/snap/Rtq-_/tz.wK/0000005377_47.GzYc");
    p = blob_path("a%20b/c%2Fd", why);
    ASSERT_TRUE(p);
    EXPECT_EQ(*p, "a b/c/d");
}

TEST(blob_path, rejects_bad_paths)
{
    std::string why;
    for (std::string bad : std::vector<std::string>{"", "/etc/passwd", "a/../b", "..", "a/./b", "a//b", "a/", "a%00b", "a\\b", "%2e%2e/x",
                            "a%zz", "a%2", std::string(300, 'x'), std::string(1100, 'y').replace(100, 1, "/")}) {
        EXPECT_FALSE(blob_path(bad, why)) << bad;
        EXPECT_FALSE(why.empty());
    }
}

TEST(file_store, atomic_put_and_persistence_index)
{
    auto root = fs::temp_directory_path() / ("lockstep-store-" + std::to_string(::getpid()));
    fs::remove_all(root);
    {
        file_store store(root.string());
        ASSERT_FALSE(store.put("apps/x/snap/a", "hello"));
        ASSERT_FALSE(store.put("apps/x/snap/a", "world"));  // replaced atomically
        std::ifstream in(store.file_of("apps/x/snap/a"));
        std::stringstream ss;
        ss << in.rdbuf();
        EXPECT_EQ(ss.str(), "world");
        // No temporary files left behind.
        int files = 0;
        for (auto const& e : fs::recursive_directory_iterator(root / "files"))
            files += e.is_regular_file();
        EXPECT_EQ(files, 1);
        file_persistence p(store);
        EXPECT_FALSE(p.lookup("app", "pid"));
        p.record("app", "pid", "http://u/1");
        EXPECT_EQ(p.lookup("app", "pid").value_or(""), "http://u/1");
    }
    {
        // A restarted reflector still knows the record.
        file_store store(root.string());
        file_persistence p(store);
        EXPECT_EQ(p.lookup("app", "pid").value_or(""), "http://u/1");
    }
    fs::remove_all(root);
}
