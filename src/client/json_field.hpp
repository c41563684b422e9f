// Reading fields of JSON that other parties wrote (the reflector, other clients, the
// router) without throwing: a missing field or one of the wrong type gives the default.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <type_traits>

namespace lockstep::client::detail {

template <class T>
T
field(nlohmann::json const& o, std::string_view key, T def)
{
    if (!o.is_object())
        return def;
    auto it = o.find(key);
    if (it == o.end())
        return def;
    if constexpr (std::is_same_v<T, std::string>)
        return it->is_string() ? it->template get<std::string>() : def;
    else if constexpr (std::is_same_v<T, bool>)
        return it->is_boolean() ? it->template get<bool>() : def;
    else if constexpr (std::is_integral_v<T>)
        return it->is_number_integer() ? it->template get<T>() : def;
    else
        static_assert(sizeof(T) == 0, "field<T>: string, bool or an integer type");
}

inline std::string
field(nlohmann::json const& o, std::string_view key, char const* def)
{
    return field<std::string>(o, key, def);
}

}  // namespace lockstep::client::detail
