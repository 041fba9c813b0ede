-- Does not compile.
return {
    access = function(ctx)
        local x = = 1
    end,
}
