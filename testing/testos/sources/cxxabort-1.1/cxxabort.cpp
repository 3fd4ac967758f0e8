// cxxabort 1.1: the check moved into a class; the exception is still uncaught.
#include <stdexcept>
#include <string>

namespace cxxabort {

class ConfigChecker {
public:
    explicit ConfigChecker(int limit) : limit_(limit) {}

    [[gnu::noinline]] void v11_check_level(int level) const
    {
        if (level <= limit_)
            return;
        std::string cxx_message = "cxxabort 1.1: level " + std::to_string(level)
                                  + " exceeds " + std::to_string(limit_);
        throw std::runtime_error(cxx_message); // CRASH HERE
    }

private:
    int limit_;
};

} // namespace cxxabort

int main()
{
    int config_level = 9;
    cxxabort::ConfigChecker checker(3);
    checker.v11_check_level(config_level);
    return 0;
}
