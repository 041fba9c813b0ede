-- Picks the target named by the X-Target header; nil otherwise (fallback).
return {
    balance = function(ctx, conf, targets)
        local want = ctx:header("X-Target")
        for i = 1, #targets do
            if targets[i].address == want then return i end
        end
        return nil
    end,
}
