-- Argo CD health of a distill.dev DistillationProject, read from the status the
-- operator writes (kstatus conditions Ready/Reconciling/Stalled, plus Drifted).
-- Lua 5.1 (Argo CD runs gopher-lua): no goto, no integer division.
local hs = {}
local status = obj.status or {}
local spec = obj.spec or {}
local generation = obj.metadata and obj.metadata.generation

local conditions = {}
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    conditions[condition.type] = condition
  end
end

local function holds(kind)
  local condition = conditions[kind]
  return condition ~= nil and condition.status == "True"
end

local function message_of(kind)
  local condition = conditions[kind]
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return nil
end

-- Before the first pass there is no stage yet; the operator starts at Define.
local function suspended()
  hs.status = "Suspended"
  hs.message = "suspended at " .. (status.stage or "Define")
  return hs
end

local function reconciling_message()
  return message_of("Reconciling") or ("phase " .. (status.phase or "Pending"))
end

-- Suspension is the user's intent: show it even before the operator has caught up.
if spec.suspend == true then
  return suspended()
end

-- A status from an older generation says nothing about the spec as it is now. Conditions
-- carry the generation they were derived for: a Reconciling condition of this generation
-- means the operator has seen the change and says what it does about it (e.g. a change
-- held until the running stage ends).
local observed = status.observedGeneration or 0
if generation ~= nil and observed < generation then
  local reconciling = conditions["Reconciling"]
  hs.status = "Progressing"
  if reconciling ~= nil and reconciling.observedGeneration == generation
      and message_of("Reconciling") ~= nil then
    hs.message = message_of("Reconciling")
  else
    hs.message = "waiting for the operator to observe generation " .. tostring(generation)
  end
  return hs
end
if obj.status == nil or (generation == nil and observed == 0) then
  hs.status = "Progressing"
  hs.message = "waiting for the operator"
  return hs
end

if status.phase == "Suspended" then
  return suspended()
end

if holds("Stalled") then
  local stalled = conditions["Stalled"]
  hs.status = "Degraded"
  hs.message = stalled.reason
  if message_of("Stalled") ~= nil then
    hs.message = stalled.reason .. ": " .. stalled.message
  end
  return hs
end

-- Failed always comes with Stalled; this covers a status whose conditions were lost.
if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = (status.stage or "the project") .. " failed"
  if status.stages ~= nil then
    for _, stage in ipairs(status.stages) do
      if stage.state == "Failed" then
        hs.message = stage.name .. " failed: " .. (stage.message or "")
        break
      end
    end
  end
  return hs
end

if holds("Drifted") then
  if status.phase == "Monitoring" then
    -- The student still serves, but on traffic it no longer matches: someone should look.
    hs.status = "Degraded"
    hs.message = "drifted: " .. (message_of("Drifted") or "the live traffic moved away")
    return hs
  end
  if status.phase == "Running" then
    hs.status = "Progressing"
    hs.message = "re-distilling after drift: " .. reconciling_message()
    return hs
  end
end

if holds("Ready") then
  hs.status = "Healthy"
  hs.message = message_of("Ready") or ("project " .. (status.phase or "ready"))
  return hs
end

hs.status = "Progressing"
hs.message = reconciling_message()
return hs
