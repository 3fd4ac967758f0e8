// cxxabort 1.0: throws an exception nobody catches, so std::terminate aborts.
#include <stdexcept>
#include <string>

namespace cxxabort {

[[gnu::noinline]] void v10_validate_config(int level)
{
    std::string cxx_message = "cxxabort 1.0: configuration level " + std::to_string(level)
                              + " is invalid";
    throw std::runtime_error(cxx_message); // CRASH HERE
}

} // namespace cxxabort

int main()
{
    int config_level = 7;
    cxxabort::v10_validate_config(config_level);
    return 0;
}
