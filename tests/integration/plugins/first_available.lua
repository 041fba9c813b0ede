-- A custom balancer: the first available target, always.
return {
    balance = function(ctx, conf, targets)
        for i = 1, #targets do
            if targets[i].available then return i end
        end
        return nil
    end,
}
